"""The human-readable Evidently HTML report of one monitor run.

Rendered with the verdict's per-column methods and thresholds on the same sampled rows
(:mod:`.drift`), so the page and the verdict agree: the dataset drift of the features,
the prediction drift of the score beside it, and classification quality of the labelled
rows (:mod:`.performance`).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.metrics import ValueDrift
from evidently.presets import DataDriftPreset

from airloop.runtime.evaluation.drift import MAX_ROWS, ColumnDrift, DriftResult, samples
from airloop.runtime.evaluation.performance import (
    classification_definition,
    performance_metrics,
)


def drift_snapshot(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    drift: DriftResult,
    prediction: ColumnDrift,
    *,
    features: Sequence[str],
    categorical: Sequence[str],
    score: str = "score",
    max_rows: int = MAX_ROWS,
) -> Snapshot:
    """Evidently's drift report of the verdict: ``DataDriftPreset`` over ``features``
    (its drifted-columns share is the dataset verdict of ``drift``) and ``ValueDrift`` of
    ``score`` (the prediction drift), each column with the verdict's method and threshold,
    on the verdict's samples."""
    cols = [*features, score]
    cats = [c for c in features if c in set(categorical)]
    nums = [c for c in cols if c not in set(cats)]
    definition = DataDefinition(numerical_columns=nums, categorical_columns=cats)
    ref, cur = samples(reference, current, cols, max_rows)
    tested = {c.column: c for c in drift.columns if c.method != "none"}
    metrics: list = [DataDriftPreset(
        columns=[c for c in features if c in tested],
        drift_share=drift.share_threshold,
        per_column_method={c: tested[c].method for c in tested},
        per_column_threshold={c: tested[c].threshold for c in tested},
    )]
    if prediction.method != "none":
        metrics.append(ValueDrift(column=score, method=prediction.method,
                                  threshold=prediction.threshold))
    return Report(metrics, include_tests=True).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )


def build_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    drift: DriftResult,
    prediction: ColumnDrift,
    *,
    features: Sequence[str],
    categorical: Sequence[str],
    score: str = "score",
    label: str | None = None,
    labelled: pd.DataFrame | None = None,
    metric_name: str = "roc_auc",
    title: str = "airloop monitor",
    summary: dict[str, Any] | None = None,
    max_rows: int = MAX_ROWS,
) -> str:
    """The Evidently HTML report as one self-contained page.

    Section 1: data drift of the features and prediction drift of ``score``
    (:func:`drift_snapshot`). Section 2, when ``labelled`` is given: classification
    quality on the labelled rows, with the reference (holdout scores) alongside.
    Sections are Evidently pages in iframes under a header with ``summary``.
    """
    snap = drift_snapshot(reference, current, drift, prediction, features=features,
                          categorical=categorical, score=score, max_rows=max_rows)
    sections = [("Data and prediction drift", snap.get_html_str(as_iframe=True))]
    if labelled is not None and label is not None and len(labelled):
        pdef = classification_definition(label, score)
        keep = [label, score]
        pref = reference[keep].dropna().astype({label: "int64"})
        pcur = labelled[keep].dropna().astype({label: "int64"})
        psnap = Report(performance_metrics(metric_name), include_tests=False).run(
            current_data=Dataset.from_pandas(pcur, data_definition=pdef),
            reference_data=Dataset.from_pandas(pref, data_definition=pdef),
        )
        sections.append(
            ("Classification quality (labelled rows; reference: holdout)",
             psnap.get_html_str(as_iframe=True))
        )
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v, default=str))}</td></tr>"
        for k, v in (summary or {}).items()
    )
    body = "".join(f"<h2>{html.escape(t)}</h2>\n{frame}\n" for t, frame in sections)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:1em}th{text-align:left;padding-right:1em}"
        "iframe{width:100%;min-height:900px;border:0}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><table>{rows}</table>\n{body}</body></html>"
    )
