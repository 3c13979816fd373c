"""Promote step: this DAG run's challenger becomes the ``champion``.

``airloop promote --project <p> --run-id <dag run id>``

The DAG calls it only after the gate said yes and the deploy succeeded. The former
champion keeps the alias ``previous`` (for rollback). Idempotent: when the version is
already champion nothing moves. A version the gate rejected is never promoted.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from airloop.core.errors import AirloopError
from airloop.runtime import tracking

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"


def run(spec, *, run_id: str, settings) -> dict[str, Any]:
    """Point alias ``champion`` at DAG run ``run_id``'s version; old champion -> ``previous``.

    Output: ``{"champion_version", "previous_version", "changed"}``.
    """
    client = tracking.client(settings)
    name = spec.model_name
    version = tracking.require_challenger(client, spec, run_id)
    if version.tags.get("airloop.gate.promote") == "false":
        raise AirloopError(
            f"{name} version {version.version} was rejected by the gate "
            f"({version.tags.get('airloop.gate.reason', 'no reason recorded')}); not promoting"
        )
    champion = tracking.alias_version(client, name, CHAMPION)
    if champion is not None and champion.version == version.version:
        previous = tracking.alias_version(client, name, PREVIOUS)
        return {
            "champion_version": str(version.version),
            "previous_version": str(previous.version) if previous is not None else None,
            "changed": False,
        }
    if champion is not None:
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
    client.set_registered_model_alias(name, CHAMPION, version.version)
    client.set_model_version_tag(
        name, version.version, "airloop.promoted_at",
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    log.info("promote: %s v%s is champion (previous: %s)", name, version.version,
             champion.version if champion is not None else None)
    return {
        "champion_version": str(version.version),
        "previous_version": str(champion.version) if champion is not None else None,
        "changed": True,
    }
