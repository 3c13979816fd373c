"""Gate step: should this DAG run's challenger replace the champion?

``airloop gate --project <p> --run-id <dag run id>``

The challenger (the version registered by this DAG run) and the current ``champion``
(if any) are scored with the spec's metric on the challenger run's holdout artifact
(``holdout/holdout.parquet``), loading both through ``models:/<name>/<version>``
(score = column 1 of the pyfunc output). Promote iff the challenger reaches
``promotion.min_metric`` and, when a champion exists, beats it by at least
``promotion.min_improvement`` in the direction of ``metric.mode``.

The verdict and both numbers are tagged on the challenger version. Idempotent: a
version that already carries a verdict returns it without scoring again.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from airloop.core.errors import AirloopError
from airloop.runtime import tracking
from airloop.runtime.models import is_better, score

log = logging.getLogger(__name__)

TAG_VERDICT = "airloop.gate"
CHAMPION = "champion"


def _score_version(name: str, version: str, holdout: pd.DataFrame, spec) -> float:
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    out = model.predict(holdout[spec.feature_columns])
    proba = np.asarray(out.to_numpy() if hasattr(out, "to_numpy") else out, dtype=float)
    if proba.ndim != 2 or proba.shape[1] < 2:
        raise AirloopError(
            f"model {name} version {version} returned shape {proba.shape}; "
            "expected class probabilities (n, 2)"
        )
    return score(spec.metric.name, holdout[spec.label].astype(int), proba[:, 1])


def decide(challenger: float, champion: float | None, spec) -> tuple[bool, str]:
    """The promotion rule on two numbers; returns (promote, reason)."""
    metric, mode = spec.metric.name, spec.metric.mode
    floor = spec.promotion.min_metric
    margin = spec.promotion.min_improvement
    if challenger is None or math.isnan(challenger):
        return False, f"challenger {metric} is undefined on the holdout"
    if floor is not None and not is_better(challenger, float(floor), mode):
        word = "above" if mode == "min" else "below"
        return False, f"challenger {metric}={challenger:.4f} is {word} promotion.min_metric={floor}"
    if champion is None or math.isnan(champion):
        return True, f"no comparable champion; challenger {metric}={challenger:.4f} passes the floor"
    if is_better(challenger, champion, mode, margin):
        how = "beats" if is_better(challenger, champion, mode) else "is within tolerance of"
        return True, (
            f"challenger {metric}={challenger:.4f} {how} champion {champion:.4f} "
            f"(promotion.min_improvement={margin})"
        )
    return False, (
        f"challenger {metric}={challenger:.4f} does not beat champion {champion:.4f} "
        f"by promotion.min_improvement={margin}"
    )


def run(spec, *, run_id: str, settings) -> dict[str, Any]:
    """Evaluate this DAG run's challenger against the champion; return the verdict.

    Output: ``{"promote", "reason", "challenger_version", "champion_version",
    "challenger_metric", "champion_metric"}``. Raises :class:`AirloopError` when
    DAG run ``run_id`` registered no challenger.
    """
    client = tracking.client(settings)
    tracking.use(settings)
    name = spec.model_name
    challenger = tracking.require_challenger(client, spec, run_id)
    stored = challenger.tags.get(TAG_VERDICT)
    if stored:
        return json.loads(stored)

    champion = tracking.alias_version(client, name, CHAMPION)
    with tempfile.TemporaryDirectory(prefix="airloop-gate-") as tmp:
        path = tracking.download(client, challenger.run_id, "holdout/holdout.parquet", Path(tmp))
        holdout = pd.read_parquet(path)
    if holdout.empty:
        raise AirloopError(f"holdout of run {challenger.run_id} is empty")
    challenger_metric = _score_version(name, challenger.version, holdout, spec)
    champion_metric = None
    champion_note = ""
    if champion is not None and champion.version != challenger.version:
        try:
            champion_metric = _score_version(name, champion.version, holdout, spec)
        except Exception as exc:  # e.g. the feature set changed since the champion
            champion_note = f" (champion v{champion.version} cannot score this holdout: {exc})"
            log.warning("gate: %s", champion_note.strip())
    elif champion is not None:
        champion_metric = challenger_metric  # already champion (a re-run after promote)
    promote, reason = decide(challenger_metric, champion_metric, spec)
    result = {
        "promote": promote,
        "reason": (reason + champion_note)[:1000],
        "challenger_version": str(challenger.version),
        "champion_version": str(champion.version) if champion is not None else None,
        "challenger_metric": challenger_metric,
        "champion_metric": champion_metric,
        "metric_name": spec.metric.name,
    }
    for key, value in {
        "airloop.gate.promote": str(promote).lower(),
        "airloop.gate.reason": result["reason"],
        "airloop.gate.challenger_metric": repr(challenger_metric),
        "airloop.gate.champion_metric": "" if champion_metric is None else repr(champion_metric),
        "airloop.gate.champion_version": result["champion_version"] or "",
        TAG_VERDICT: json.dumps(result),  # last: its presence marks the verdict complete
    }.items():
        client.set_model_version_tag(name, challenger.version, key, value)
    log.info("gate: %s v%s promote=%s: %s", name, challenger.version, promote, reason)
    return result
