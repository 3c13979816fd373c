"""The retrain guard rails: cool-down and max retrains per day, idempotent per run id.

Decisions live in a JSON state file (a week of history), read and written under an
exclusive ``flock`` on ``<state>.lock`` so concurrent monitor runs of one project
serialise; the file itself is replaced atomically (:mod:`airloop.core.io`).
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airloop.core.io import write_json


@dataclass
class Decision:
    retrain: bool
    reason: str
    recorded: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_state(path: Path) -> dict[str, Any]:
    """The state file's ``{"decisions": {run id: decision}}`` (empty when absent)."""
    if not path.is_file():
        return {"decisions": {}}
    try:
        state = json.loads(path.read_text())
    except ValueError:
        # A corrupt state file must not silently reset the guard rails forever: keep it.
        path.rename(path.with_name(f"{path.name}.corrupt-{datetime.now(UTC):%Y%m%dT%H%M%S}"))
        return {"decisions": {}}
    state.setdefault("decisions", {})
    return state


def decide_retrain(
    state_path: Path,
    run_id: str,
    *,
    wanted: bool,
    why: str,
    cooldown_hours: float,
    max_per_day: int,
    now: datetime | None = None,
) -> Decision:
    """Apply the guard rails to a wanted retrain and record the decision.

    ``wanted`` is the monitor's finding (drift or degradation; ``why`` says which).
    A retrain is allowed when no *other* run decided one within ``cooldown_hours`` and
    fewer than ``max_per_day`` were decided in the last 24 hours. Idempotent: a run id
    already in the state returns its recorded decision (a retried task neither
    double-counts nor loses its retrain).
    """
    now = now or datetime.now(UTC)
    with _locked(state_path):
        state = read_state(state_path)
        decisions: dict[str, Any] = state["decisions"]
        if run_id in decisions:
            rec = decisions[run_id]
            return Decision(bool(rec["retrain"]), rec["reason"], recorded=True)
        retrains = sorted(
            datetime.fromisoformat(d["at"]) for r, d in decisions.items() if d.get("retrain")
        )
        if not wanted:
            retrain, reason = False, why
        elif max_per_day <= 0:
            retrain, reason = False, f"max retrains per day: retraining is disabled ({why})"
        elif retrains and now - retrains[-1] < timedelta(hours=cooldown_hours):
            last = retrains[-1].isoformat(timespec="seconds")
            retrain, reason = False, f"cool-down: last retrain decided at {last} ({why})"
        elif sum(now - t < timedelta(days=1) for t in retrains) >= max_per_day:
            retrain, reason = False, f"max retrains per day ({max_per_day}) reached ({why})"
        else:
            retrain, reason = True, why
        decisions[run_id] = {"at": now.isoformat(), "retrain": retrain, "reason": reason,
                             "wanted": wanted}
        # Keep a week of history: enough for the guard rails and for a human.
        cutoff = now - timedelta(days=7)
        state["decisions"] = {
            r: d for r, d in decisions.items() if datetime.fromisoformat(d["at"]) >= cutoff
        }
        write_json(state_path, state)
        return Decision(retrain, reason)
