"""Classification quality of the labelled predictions, with Evidently's metrics.

* :func:`evaluate_performance` — the metric of the spec (plus ROC AUC and accuracy) on
  the labelled rows, and whether it dropped past the policy from the holdout baseline;
* :func:`min_labels` — how many labelled rows the check needs;
* :func:`classification_definition` / :func:`performance_metrics` — the Evidently data
  definition and metrics, shared with :mod:`.report` so the page shows the same numbers.
"""

from __future__ import annotations

import math
from typing import Any

import evidently.metrics as em
import pandas as pd
from evidently import BinaryClassification, DataDefinition, Dataset, Report

from airloop.core.errors import AirloopError

#: Spec metric name -> (Evidently metric class name, higher is better).
METRICS = {
    "roc_auc": ("RocAuc", True),
    "accuracy": ("Accuracy", True),
    "f1": ("F1Score", True),
    "log_loss": ("LogLoss", False),
}


def min_labels(min_rows: int) -> int:
    """Labelled rows needed before the performance check says anything."""
    return max(20, min_rows // 2)


def classification_definition(label: str, score: str) -> DataDefinition:
    """Binary classification of ``label`` by the probability column ``score``."""
    return DataDefinition(
        classification=[BinaryClassification(target=label, prediction_probas=score)],
        numerical_columns=[score],
    )


def performance_metrics(metric_name: str) -> list:
    """Evidently metrics for ROC AUC, accuracy and ``metric_name``."""
    names = ["roc_auc", "accuracy"]
    if metric_name not in names:
        names.append(metric_name)
    return [getattr(em, METRICS[n][0])() for n in names]


def evaluate_performance(
    labelled: pd.DataFrame,
    *,
    label: str,
    score: str = "score",
    metric_name: str = "roc_auc",
    baseline: float | None = None,
    max_drop: float = 0.05,
) -> dict[str, Any]:
    """Classification quality of ``score`` against ``label`` (Evidently's metrics).

    Returns ``{"metric", "value", "accuracy", "roc_auc", ..., "baseline", "drop",
    "degraded", "rows"}``; ``drop`` is signed so that positive means worse (for
    ``log_loss`` lower is better). Degraded when ``drop >= max_drop``.
    """
    if metric_name not in METRICS:
        raise AirloopError(f"monitor: unsupported metric {metric_name!r}")
    frame = labelled[[label, score]].dropna().astype({label: "int64", score: "float64"})
    data = Dataset.from_pandas(frame, data_definition=classification_definition(label, score))
    snap = Report(performance_metrics(metric_name), include_tests=False).run(current_data=data)
    values: dict[str, float] = {}
    by_class = {cls: name for name, (cls, _) in METRICS.items()}
    for m in snap.dict()["metrics"]:
        cls = m["config"]["type"].rsplit(":", 1)[-1]
        if cls in by_class:
            values[by_class[cls]] = float(m["value"])
    value = values[metric_name]
    higher_is_better = METRICS[metric_name][1]
    drop = None
    if baseline is not None and not math.isnan(baseline):
        drop = (baseline - value) if higher_is_better else (value - baseline)
    return {
        "metric": metric_name,
        "value": value,
        **values,
        "baseline": baseline,
        "drop": drop,
        "degraded": bool(drop is not None and drop >= max_drop),
        "rows": len(frame),
    }
