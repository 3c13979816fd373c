"""The monitor's Prometheus metrics, for a node-exporter textfile collector.

:func:`build_registry` puts one monitor result on a ``prometheus_client``
``CollectorRegistry``; :func:`render` is its text exposition (``generate_latest``), which
the step writes atomically to ``<monitor>/metrics.prom``. Every sample carries the
``tenant`` and ``project`` labels.

The registry holds ``GaugeMetricFamily`` objects (the library's custom-collector form)
rather than ``Gauge`` instruments: a ``Gauge`` keeps its value in storage chosen
process-wide when ``prometheus_client`` is first imported, and once
``PROMETHEUS_MULTIPROC_DIR`` is set (importing feast sets it) that storage is mmap files
in that folder: the step would write files there and fail when the folder is gone. A
metric family carries its values itself, whatever the process imported before.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from airloop.runtime.evaluation.drift import DriftResult
from airloop.runtime.evaluation.performance import METRICS

BASE_LABELS = ("tenant", "project")


class _Snapshot:
    """A collector of metric families computed once."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _families(result: dict[str, Any], base: tuple[str, str], drift: DriftResult | None,
              now: datetime) -> Iterator[Metric]:
    def gauge(name: str, help_: str, value: float | None = None, *,
              extra: tuple[str, ...] = (),
              samples: Iterable[tuple[tuple[str, ...], float]] = ()) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, help_, labels=[*BASE_LABELS, *extra])
        if value is not None:
            family.add_metric(base, float(value))
        for labels, sample in samples:
            family.add_metric([*base, *labels], float(sample))
        return family

    yield gauge("airloop_monitor_last_run_timestamp_seconds", "Time of the last monitor run.",
                now.timestamp())
    yield gauge("airloop_monitor_rows", "Logged predictions in the monitor window.",
                result["rows"])
    yield gauge("airloop_monitor_labelled_rows", "Predictions in the window with ground truth.",
                result["labelled_rows"])
    yield gauge("airloop_monitor_verdict", "1 when the window had enough rows for a verdict.",
                float(result.get("verdict", False)))
    if result.get("drift_share") is not None:
        yield gauge("airloop_drift_share", "Share of feature columns with detected drift.",
                    result["drift_share"])
        yield gauge("airloop_drifted_columns", "Number of feature columns with detected drift.",
                    len(result["drifted_columns"]))
        yield gauge("airloop_dataset_drift", "1 when the drift share reached the threshold.",
                    float(result["drift"]))
        yield gauge("airloop_prediction_drift", "1 when the score distribution drifted.",
                    float(result["prediction_drift"]))
    if drift is not None:
        yield gauge("airloop_column_drift_score", "Drift score per column (see method label).",
                    extra=("column", "method"),
                    samples=[((c.column, c.method), c.score)
                             for c in drift.columns if not math.isnan(c.score)])
    perf = result.get("performance") or {}
    if perf.get("value") is not None:
        yield gauge("airloop_model_performance", "Metric on labelled predictions in the window.",
                    extra=("metric",),
                    samples=[((m,), perf[m]) for m in METRICS if perf.get(m) is not None])
        if perf.get("baseline") is not None:
            yield gauge("airloop_model_holdout_metric", "The model's holdout metric at training.",
                        extra=("metric",), samples=[((perf["metric"],), perf["baseline"])])
    yield gauge("airloop_model_degraded", "1 when the metric dropped past the policy.",
                float(result["degraded"]))
    yield gauge("airloop_retrain_decision", "1 when the last monitor run decided to retrain.",
                float(result["retrain"]))


def build_registry(result: dict[str, Any], *, tenant: str, project: str,
                   drift: DriftResult | None = None,
                   now: datetime | None = None) -> CollectorRegistry:
    """A registry with the gauges of one monitor ``result`` (the step's dict).

    ``drift`` adds the per-column drift scores of the dataset verdict's columns.
    """
    registry = CollectorRegistry()
    registry.register(_Snapshot(_families(result, (tenant, project), drift,
                                          now or datetime.now(UTC))))
    return registry


def render(result: dict[str, Any], *, tenant: str, project: str,
           drift: DriftResult | None = None, now: datetime | None = None) -> bytes:
    """The text exposition format of :func:`build_registry`'s registry."""
    return generate_latest(build_registry(result, tenant=tenant, project=project,
                                          drift=drift, now=now))
