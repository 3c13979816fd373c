"""Drift, performance and the retrain guard rails (Evidently 0.7 underneath).

Pure functions used by the ``monitor`` step (:mod:`airloop.runtime.steps.monitor`) and by the
benchmarks:

* :func:`compute_drift` — per-column drift with Evidently's own statistical tests
  (its default method choice: normed Wasserstein / Jensen-Shannon for more than 1000
  reference rows, KS / chi-square / z-test below) on seeded samples of at most
  ``max_rows`` rows per side, without Evidently's report machinery (plotly widgets
  cost ~1 s per column). The dataset verdict is Evidently's: share of drifted
  columns ``>= share_threshold``.
* :func:`drift_share` — ``(share, drifted_columns)``, the benchmark's entry point.
* :func:`evaluate_performance` — classification quality with Evidently's metrics.
* :func:`build_report` — the human-readable Evidently HTML report, rendered with the
  same per-column methods and thresholds as the verdict (so they agree).
* :func:`decide_retrain` — the guard rails (cool-down, max retrains per day) kept in a
  JSON state file, idempotent per run id.
* :func:`prometheus_text` — node-exporter textfile-collector metrics.

Nothing here touches MLflow or the prediction log; the step does the I/O.
"""

from __future__ import annotations

import fcntl
import html
import json
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Rows per side the drift tests see. Normed Wasserstein / Jensen-Shannon estimates are
#: stable to ~1/sqrt(n); 20k rows keeps their noise far below the 0.1 thresholds while
#: capping the cost of 100k-row windows.
MAX_ROWS = 20_000

#: Spec metric name -> (Evidently metric class name, higher is better).
METRICS = {
    "roc_auc": ("RocAuc", True),
    "accuracy": ("Accuracy", True),
    "f1": ("F1Score", True),
    "log_loss": ("LogLoss", False),
}


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """Per-column drift and the dataset verdict."""

    columns: tuple[ColumnDrift, ...]
    share: float
    share_threshold: float
    reference_rows: int
    current_rows: int

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def n_drifted(self) -> int:
        return len(self.drifted_columns)

    @property
    def dataset_drift(self) -> bool:
        return bool(self.columns) and self.share >= self.share_threshold

    def methods(self) -> dict[str, str]:
        return {c.column: c.method for c in self.columns}

    def thresholds(self) -> dict[str, float]:
        return {c.column: c.threshold for c in self.columns}

    def as_dict(self) -> dict[str, Any]:
        return {
            "share": self.share,
            "dataset_drift": self.dataset_drift,
            "drifted_columns": self.drifted_columns,
            "columns": [asdict(c) for c in self.columns],
        }


def sample(frame: pd.DataFrame, max_rows: int = MAX_ROWS, seed: int = 0) -> pd.DataFrame:
    """At most ``max_rows`` rows, drawn without replacement with a fixed seed."""
    if len(frame) <= max_rows:
        return frame
    idx = np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False)
    idx.sort()
    return frame.iloc[idx]


def _column_type(series: pd.Series, categorical: set[str]):
    from evidently.legacy.core import ColumnType

    if series.name in categorical or not pd.api.types.is_numeric_dtype(series):
        return ColumnType.Categorical
    return ColumnType.Numerical


def _few_values(ref: pd.Series, cur: pd.Series, limit: int) -> int | None:
    """Distinct values of ref+cur when there are at most ``limit``, else None (cheap:
    a head that already has more values settles it without hashing everything)."""
    head = pd.concat([ref.iloc[:1000], cur.iloc[:1000]])
    if head.nunique() > limit:
        return None
    n = pd.concat([ref, cur]).nunique()
    return n if n <= limit else None


def _default_method(ref: pd.Series, cur: pd.Series, categorical: bool) -> str:
    """Evidently's default stat test choice (``stattests.registry._get_default_stattest``
    for numerical and categorical columns), without hashing every value twice."""
    if len(ref) > 1000:
        if categorical or _few_values(ref, cur, 5) is not None:
            return "jensenshannon"
        return "wasserstein"
    if categorical:
        n = _few_values(ref, cur, 2)
        return "z" if n is not None else "chisquare"
    n = _few_values(ref, cur, 5)
    if n is None:
        return "ks"
    return "chisquare" if n > 2 else "z"


def column_drift(
    reference: pd.Series,
    current: pd.Series,
    *,
    categorical: bool = False,
    method: str | None = None,
    threshold: float | None = None,
) -> ColumnDrift:
    """Drift of one column with Evidently's registered stat test (default choice if
    ``method`` is None). NaNs are dropped first, as Evidently does."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    ftype = ColumnType.Categorical if categorical else ColumnType.Numerical
    ref, cur = reference.dropna(), current.dropna()
    if ftype is ColumnType.Numerical:
        ref, cur = ref.astype("float64"), cur.astype("float64")
    if ref.empty or cur.empty:
        return ColumnDrift(str(reference.name), "none", float("nan"), float("nan"), False)
    test = get_stattest(ref, cur, ftype, method or _default_method(ref, cur, categorical))
    res = test(ref, cur, ftype, threshold)
    return ColumnDrift(
        column=str(reference.name),
        method=test.name,
        score=float(res.drift_score),
        threshold=float(res.actual_threshold),
        drifted=bool(res.drifted),
    )


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    categorical: Sequence[str] = (),
    share_threshold: float = 0.3,
    max_rows: int = MAX_ROWS,
    methods: dict[str, str] | None = None,
) -> DriftResult:
    """Per-column drift of ``current`` against ``reference`` and the dataset verdict.

    ``columns`` defaults to the columns both frames share. Object/string columns and
    the ``categorical`` ones are tested as categorical. Both frames are sampled to at
    most ``max_rows`` rows (fixed seeds), so a 100k-row window costs about what a 20k one
    does. ``methods`` overrides Evidently's per-column default choice.
    """
    if columns is None:
        columns = [c for c in reference.columns if c in current.columns]
    missing = [c for c in columns if c not in reference.columns or c not in current.columns]
    if missing:
        from airloop.core.errors import AirloopError

        raise AirloopError(f"drift: column(s) {missing} missing from reference or current data")
    cats = set(categorical)
    ref = sample(reference[list(columns)], max_rows, seed=1)
    cur = sample(current[list(columns)], max_rows, seed=2)
    results = []
    for col in columns:
        is_cat = _column_type(ref[col], cats).value == "cat"
        results.append(
            column_drift(ref[col], cur[col], categorical=is_cat,
                         method=(methods or {}).get(col))
        )
    tested = [r for r in results if r.method != "none"]
    share = sum(r.drifted for r in tested) / len(tested) if tested else 0.0
    return DriftResult(tuple(results), share, share_threshold, len(reference), len(current))


def drift_share(reference: pd.DataFrame, current: pd.DataFrame,
                share_threshold: float = 0.3) -> tuple[float, list[str]]:
    """``(share of drifted columns, drifted column names)`` over the shared columns."""
    result = compute_drift(reference, current, share_threshold=share_threshold)
    return result.share, result.drifted_columns


# -- performance ---------------------------------------------------------------------


def min_labels(min_rows: int) -> int:
    """Labelled rows needed before the performance check says anything."""
    return max(20, min_rows // 2)


def _classification_definition(label: str, score: str):
    from evidently import BinaryClassification, DataDefinition

    return DataDefinition(
        classification=[BinaryClassification(target=label, prediction_probas=score)],
        numerical_columns=[score],
    )


def _performance_metrics(metric_name: str) -> list:
    import evidently.metrics as em

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
    "degraded"}``; ``drop`` is signed so that positive means worse (for ``log_loss``
    lower is better). Degraded when ``drop >= max_drop``.
    """
    from evidently import Dataset, Report

    if metric_name not in METRICS:
        from airloop.core.errors import AirloopError

        raise AirloopError(f"monitor: unsupported metric {metric_name!r}")
    frame = labelled[[label, score]].dropna().astype({label: "int64", score: "float64"})
    data = Dataset.from_pandas(frame, data_definition=_classification_definition(label, score))
    snap = Report(_performance_metrics(metric_name), include_tests=False).run(current_data=data)
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


# -- report --------------------------------------------------------------------------


def build_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    drift: DriftResult,
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

    Section 1: data drift of the features plus prediction drift of ``score``
    (``DataDriftPreset`` with the verdict's per-column methods and thresholds, on the
    same samples, so the page and the verdict agree). Section 2, when ``labelled`` is
    given: classification quality on the labelled rows, with the reference (holdout
    scores) alongside. Sections are Evidently pages in iframes under a verdict header.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    cols = [*features, score]
    cats = [c for c in features if c in set(categorical)]
    nums = [c for c in cols if c not in set(cats)]
    definition = DataDefinition(numerical_columns=nums, categorical_columns=cats)
    ref = sample(reference[cols], max_rows, seed=1)
    cur = sample(current[cols], max_rows, seed=2)
    tested = {c.column: c for c in drift.columns if c.method != "none"}
    preset = DataDriftPreset(
        columns=[c for c in cols if c in tested],
        drift_share=drift.share_threshold,
        per_column_method={c: tested[c].method for c in tested},
        per_column_threshold={c: tested[c].threshold for c in tested},
    )
    snap = Report([preset], include_tests=True).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )
    sections = [("Data and prediction drift", snap.get_html_str(as_iframe=True))]
    if labelled is not None and label is not None and len(labelled):
        pdef = _classification_definition(label, score)
        keep = [label, score]
        pref = reference[keep].dropna().astype({label: "int64"})
        pcur = labelled[keep].dropna().astype({label: "int64"})
        psnap = Report(_performance_metrics(metric_name), include_tests=False).run(
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


# -- guard rails ---------------------------------------------------------------------


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


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


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
        _write_json(state_path, state)
        return Decision(retrain, reason)


# -- Prometheus ----------------------------------------------------------------------


def _labels(**labels: str) -> str:
    def esc(v: str) -> str:
        return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


def prometheus_text(result: dict[str, Any], *, tenant: str, project: str,
                    drift: DriftResult | None = None, now: datetime | None = None) -> str:
    """Text exposition format (for a node-exporter textfile collector)."""
    base = {"tenant": tenant, "project": project}
    lab = _labels(**base)
    now = now or datetime.now(UTC)
    out: list[str] = []

    def gauge(name: str, help_: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} gauge")
        out.extend(f"{name}{labels} {value:.10g}" for labels, value in samples)

    gauge("airloop_monitor_last_run_timestamp_seconds", "Time of the last monitor run.",
          [(lab, now.timestamp())])
    gauge("airloop_monitor_rows", "Logged predictions in the monitor window.",
          [(lab, result["rows"])])
    gauge("airloop_monitor_labelled_rows", "Predictions in the window with ground truth.",
          [(lab, result["labelled_rows"])])
    gauge("airloop_monitor_verdict", "1 when the window had enough rows for a verdict.",
          [(lab, float(result.get("verdict", False)))])
    if result.get("drift_share") is not None:
        gauge("airloop_drift_share", "Share of feature columns with detected drift.",
              [(lab, result["drift_share"])])
        gauge("airloop_drifted_columns", "Number of feature columns with detected drift.",
              [(lab, len(result["drifted_columns"]))])
        gauge("airloop_dataset_drift", "1 when the drift share reached the threshold.",
              [(lab, float(result["drift"]))])
        gauge("airloop_prediction_drift", "1 when the score distribution drifted.",
              [(lab, float(result["prediction_drift"]))])
    if drift is not None:
        gauge("airloop_column_drift_score", "Drift score per column (see method label).",
              [(_labels(**base, column=c.column, method=c.method), c.score)
               for c in drift.columns if not math.isnan(c.score)])
    perf = result.get("performance") or {}
    if perf.get("value") is not None:
        gauge("airloop_model_performance", "Metric on labelled predictions in the window.",
              [(_labels(**base, metric=m), perf[m]) for m in METRICS if perf.get(m) is not None])
        if perf.get("baseline") is not None:
            gauge("airloop_model_holdout_metric", "The model's holdout metric at training.",
                  [(_labels(**base, metric=perf["metric"]), perf["baseline"])])
    gauge("airloop_model_degraded", "1 when the metric dropped past the policy.",
          [(lab, float(result["degraded"]))])
    gauge("airloop_retrain_decision", "1 when the last monitor run decided to retrain.",
          [(lab, float(result["retrain"]))])
    return "\n".join(out) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
