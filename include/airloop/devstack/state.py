"""The supervisor's state file, ``$AIRLOOP_HOME/run/state.json``.

Written only by the supervisor (atomically: temp file + rename) and read by the CLI,
tests and other tools. Layout::

    {"supervisor": {"pid": int, "platform_id": str, "started_at": float, "phase": str},
     "options": {"database_url": str | null, "ray_cluster": bool},
     "components": {name: {"pid": int | null, "url": str, "restarts": int,
                           "last_exit": int | null, "status": str, "log": str}}}
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from airloop.core.io import write_json
from airloop.core.settings import Settings


def state_path(settings: Settings) -> Path:
    return settings.run_dir / "state.json"


def read_state(settings: Settings) -> dict:
    """Return the current state (``{}`` when the platform never ran). Never raises on a
    half-written file: the writer renames atomically, so a read sees old or new."""
    try:
        return json.loads(state_path(settings).read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError:
        return {}


def write_state(settings: Settings, state: dict) -> None:
    """Atomically replace the state file."""
    write_json(state_path(settings), state)


def pid_alive(pid: int | None) -> bool:
    """True when ``pid`` names a live (non-zombie) process."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def supervisor_pid(settings: Settings) -> int | None:
    """The running supervisor's pid, or None when it is not running."""
    pid = read_state(settings).get("supervisor", {}).get("pid")
    return pid if pid_alive(pid) else None
