"""Pipeline steps. Each is ``airloop <step> --project <name> --run-id <id> …``.

The contract (ARCHITECTURE.md, "The step contract"):

* one module per step exposing ``run(spec, *, run_id, settings, **options) -> dict``
  and optionally ``add_arguments(parser)`` for step-specific options;
* configuration from the project spec and :mod:`airloop.config` only;
* idempotent per ``run_id`` (the DAG run id): a retried try creates nothing twice;
* the returned dict is small JSON, written by the CLI to the XCom file;
* failures raise :class:`airloop.errors.AirloopError` with a one-line message.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path
from typing import Any

#: step name -> module implementing it (imported lazily: each pulls heavy libraries).
STEP_MODULES = {
    "ingest": "airloop.steps.ingest",
    "materialize": "airloop.steps.materialize",
    "train": "airloop.steps.train",
    "register": "airloop.steps.register",
    "gate": "airloop.steps.gate",
    "deploy": "airloop.steps.deploy",
    "promote": "airloop.steps.promote",
    "monitor": "airloop.steps.monitor",
    "batch_predict": "airloop.steps.batch_predict",
}


def step_module(name: str):
    return importlib.import_module(STEP_MODULES[name])


def safe_run_id(run_id: str) -> str:
    """A DAG run id made safe for file names, tags and Kubernetes labels."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)[:200]


def write_result(result: dict[str, Any], path: Path | None) -> None:
    """Write the step's JSON result to the XCom file (atomically)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, default=str, sort_keys=True))
    os.replace(tmp, path)
