"""Pipeline steps. Each is ``airloop <step> --project <name> --run-id <id> …``.

The contract (ARCHITECTURE.md, "The step contract"):

* one module per step exposing ``run(spec, *, run_id, settings, **options) -> dict``
  and optionally ``add_arguments(parser)`` for step-specific options;
* configuration from the project spec and :mod:`airloop.core.settings` only;
* idempotent per ``run_id`` (the DAG run id): a retried try creates nothing twice;
* the returned dict is small JSON, written by the CLI to the XCom file;
* failures raise :class:`airloop.core.errors.AirloopError` with a one-line message.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from airloop.core.io import atomic_write
from airloop.core.spec import STEPS

__all__ = ["STEP_MODULES", "step_module", "write_result"]

#: step name -> module implementing it (imported lazily: each pulls heavy libraries).
STEP_MODULES = {name: f"{__name__}.{name}" for name in STEPS}


def step_module(name: str) -> ModuleType:
    return importlib.import_module(STEP_MODULES[name])


def write_result(result: dict[str, Any], path: Path | None) -> None:
    """Write the step's JSON result to the XCom file (atomically)."""
    if path is not None:
        atomic_write(path, json.dumps(result, default=str, sort_keys=True))
