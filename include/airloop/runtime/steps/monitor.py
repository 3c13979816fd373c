"""``airloop monitor``: drift and performance of the champion, and the retrain decision.

Contract
--------
Inputs: the prediction log and feedback log of the last ``drift.window_hours``
(:mod:`airloop.core.predlog`, joined on ``(id, row)``) and the champion's training artifacts
in MLflow (``reference/reference.parquet`` of the run behind
``models:/<model_name>@champion`` and its ``holdout_<metric>`` metric).

Outputs, keyed by the run id (re-running the same run id overwrites, never duplicates):

* ``<monitor>/<safe run id>/report.html`` — the Evidently report, also logged to the
  champion's training run as ``monitoring/<safe run id>/report.html`` and to one
  monitoring run (tag ``airloop.kind=monitor``) in the same experiment, with metrics
  ``drift_share``, ``n_drifted``, ``performance``;
* ``<monitor>/state.json`` — guard-rail state (retrain decisions by run id);
* ``<monitor>/metrics.prom`` — Prometheus textfile-collector metrics.

Result: ``{"rows", "labelled_rows", "drift", "drift_share", "drifted_columns",
"prediction_drift", "performance", "degraded", "retrain", "reason", "report",
"mlflow_run_id", "model_version", ...}``. Fewer than ``drift.min_rows`` logged rows: no
verdict, no retrain, and the reason says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airloop.core.settings import Settings
from airloop.core.errors import AirloopError
from airloop.core.spec import ProjectSpec

log = logging.getLogger(__name__)

SCORE = "score"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--window-hours",
        type=int,
        default=None,
        help="prediction-log window to compare with the reference (default: drift.window_hours)",
    )


def read_traffic(spec: ProjectSpec, settings: Settings, start: datetime, end: datetime):
    """Logged predictions in ``[start, end)`` as a frame (features, score, entity, id,
    row, version) with ``label`` from the feedback log where present (last label wins)."""
    import pandas as pd

    from airloop.core import predlog
    from airloop.core.layout import layout

    paths = layout(spec, settings)
    features = spec.feature_columns
    records = []
    for rec in predlog.read_window(paths.predictions, start, end):
        feats = rec.get("features") or {}
        records.append({
            "id": rec.get("id"), "row": rec.get("row", 0), "ts": rec.get("ts"),
            "version": rec.get("version"), "entity": rec.get("entity"),
            SCORE: rec.get("score"), **{f: feats.get(f) for f in features},
        })
    cols = ["id", "row", "ts", "version", "entity", SCORE, *features]
    traffic = pd.DataFrame.from_records(records, columns=cols)
    # Labels may arrive after the window closed: read feedback up to now.
    labels = pd.DataFrame.from_records(
        [
            {"id": r.get("id"), "row": r.get("row", 0), spec.label: r.get("label")}
            for r in predlog.read_window(paths.feedback, start, max(end, datetime.now(UTC)))
        ],
        columns=["id", "row", spec.label],
    ).drop_duplicates(["id", "row"], keep="last")
    traffic = traffic.drop_duplicates(["id", "row"], keep="last")
    merged = traffic.merge(labels, on=["id", "row"], how="left")
    merged[SCORE] = pd.to_numeric(merged[SCORE], errors="coerce")
    for col in spec.columns:
        if col.name in merged.columns and col.dtype != "string":
            merged[col.name] = pd.to_numeric(merged[col.name], errors="coerce")
    return merged


def _champion(spec: ProjectSpec):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        return client, client.get_model_version_by_alias(spec.model_name, "champion")
    except MlflowException as exc:
        raise AirloopError(
            f"monitor: registered model {spec.model_name!r} has no 'champion' alias "
            f"(train and promote a model first)"
        ) from exc


def _reference(client, run_id: str, spec: ProjectSpec):
    import pandas as pd
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, "reference/reference.parquet", tmp)
        except (MlflowException, OSError) as exc:
            raise AirloopError(
                f"monitor: champion run {run_id} has no reference/reference.parquet artifact"
            ) from exc
        ref = pd.read_parquet(local)
    missing = [c for c in [*spec.feature_columns, SCORE] if c not in ref.columns]
    if missing:
        raise AirloopError(f"monitor: reference of run {run_id} lacks column(s) {missing}")
    return ref


def _holdout_metric(client, version, metric: str) -> float | None:
    value = client.get_run(version.run_id).data.metrics.get(f"holdout_{metric}")
    if value is None:
        raw = (version.tags or {}).get("airloop.metric")
        try:
            value = float(raw) if raw is not None else None
        except ValueError:
            value = None
    return value


def _log_to_mlflow(client, spec, version, rid: str, run_id: str, report: Path,
                   metrics: dict[str, float], tags: dict[str, str]) -> str:
    """Report on the champion's run + one monitoring run per run id (reused on retry)."""
    artifact_dir = f"monitoring/{rid}"
    client.log_artifact(version.run_id, str(report), artifact_dir)
    experiment_id = client.get_run(version.run_id).info.experiment_id
    found = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`airloop.kind` = 'monitor' and tags.`airloop.dag_run_id` = '{run_id}'"
        ),
        max_results=1,
    )
    if found:
        mrun = found[0].info.run_id
    else:
        mrun = client.create_run(
            experiment_id, run_name=f"monitor-{rid}", tags=tags
        ).info.run_id
    for key, value in tags.items():
        client.set_tag(mrun, key, value)
    for key, value in metrics.items():
        client.log_metric(mrun, key, value, step=0)
    client.log_artifact(mrun, str(report), artifact_dir)
    client.set_terminated(mrun, "FINISHED")
    return mrun


def run(spec: ProjectSpec, *, run_id: str, settings: Settings,
        window_hours: int | None = None) -> dict[str, Any]:
    """Compare the last window of traffic with the champion's reference and decide.

    ``retrain`` = (dataset drift or performance degradation) and the guard rails
    (cool-down, max retrains per day) allow it. Idempotent per ``run_id``: the report and
    artifacts are overwritten, the monitoring run is reused and a recorded retrain
    decision is returned again instead of being counted twice.
    """
    import mlflow

    from airloop.runtime import monitoring
    from airloop.core.layout import layout
    from airloop.core.naming import safe_run_id

    policy = spec.drift
    hours = window_hours if window_hours is not None else policy.window_hours
    if hours < 1:
        raise AirloopError(f"monitor: --window-hours must be >= 1, got {hours}")
    mlflow.set_tracking_uri(settings.tracking_uri)
    paths = layout(spec, settings)
    rid = safe_run_id(run_id)
    out_dir = paths.monitor / rid
    state_path = paths.monitor / "state.json"

    client, version = _champion(spec)
    end = datetime.now(UTC)
    traffic = read_traffic(spec, settings, end - timedelta(hours=hours), end)
    traffic = traffic[traffic[SCORE].notna()]
    labelled = traffic[traffic[spec.label].notna()]
    result: dict[str, Any] = {
        "rows": len(traffic),
        "labelled_rows": len(labelled),
        "window_hours": hours,
        "model_version": str(version.version),
        "verdict": False,
        "drift": False,
        "drift_share": None,
        "drifted_columns": [],
        "prediction_drift": False,
        "performance": {},
        "degraded": False,
        "retrain": False,
        "report": None,
        "mlflow_run_id": None,
    }
    tags = {
        "airloop.kind": "monitor",
        "airloop.dag_run_id": run_id,
        "airloop.model_version": str(version.version),
        "airloop.project": spec.name,
        "airloop.tenant": spec.tenant,
    }
    drift = None
    if len(traffic) < policy.min_rows:
        result["reason"] = (
            f"no verdict: {len(traffic)} logged predictions in the last {hours} h "
            f"(drift.min_rows is {policy.min_rows})"
        )
    else:
        reference = _reference(client, version.run_id, spec)
        features = spec.feature_columns
        categorical = [c.name for c in spec.columns if c.dtype == "string" and c.name in features]
        drift = monitoring.compute_drift(
            reference, traffic, [*features, SCORE], categorical=categorical,
            share_threshold=policy.share_threshold,
        )
        # The dataset verdict is over the features; the score is prediction drift.
        feat_cols = tuple(c for c in drift.columns if c.column != SCORE)
        feature_drift = monitoring.DriftResult(
            feat_cols,
            sum(c.drifted for c in feat_cols) / max(1, sum(c.method != "none" for c in feat_cols)),
            policy.share_threshold, drift.reference_rows, drift.current_rows,
        )
        score_drift = next(c for c in drift.columns if c.column == SCORE)
        metric = spec.metric.name
        baseline = _holdout_metric(client, version, metric)
        perf: dict[str, Any] = {"metric": metric, "baseline": baseline, "value": None}
        lab_ok = (len(labelled) >= monitoring.min_labels(policy.min_rows)
                  and labelled[spec.label].nunique() == 2)
        if lab_ok:
            perf = monitoring.evaluate_performance(
                labelled, label=spec.label, metric_name=metric, baseline=baseline,
                max_drop=policy.performance_drop,
            )
        else:
            perf["note"] = (
                f"{len(labelled)} labelled rows (need "
                f"{monitoring.min_labels(policy.min_rows)} with both classes)"
            )
        why = []
        if feature_drift.dataset_drift:
            why.append(
                f"data drift in {feature_drift.n_drifted}/{len(feat_cols)} columns "
                f"(share {feature_drift.share:.2f} >= {policy.share_threshold})"
            )
        if perf.get("degraded"):
            why.append(
                f"{metric} {perf['value']:.3f} is {perf['drop']:.3f} below holdout "
                f"{baseline:.3f} (drop limit {policy.performance_drop})"
            )
        wanted = bool(why)
        decision = monitoring.decide_retrain(
            state_path, run_id, wanted=wanted,
            why="; ".join(why) if why else "no drift and no performance degradation",
            cooldown_hours=policy.cooldown_hours, max_per_day=policy.max_retrains_per_day,
        )
        result.update(
            verdict=True,
            drift=feature_drift.dataset_drift,
            drift_share=round(feature_drift.share, 6),
            drifted_columns=feature_drift.drifted_columns,
            prediction_drift=score_drift.drifted,
            prediction_drift_score=score_drift.score,
            performance=perf,
            degraded=bool(perf.get("degraded")),
            retrain=decision.retrain,
            reason=decision.reason,
            columns={c.column: {"method": c.method, "score": round(c.score, 6),
                                "drifted": c.drifted} for c in drift.columns},
        )
        summary = {k: result[k] for k in (
            "rows", "labelled_rows", "model_version", "drift", "drift_share",
            "drifted_columns", "prediction_drift", "degraded", "retrain", "reason")}
        summary["performance"] = {k: perf.get(k) for k in ("metric", "value", "baseline", "drop")}
        page = monitoring.build_report(
            reference, traffic, drift, features=features, categorical=categorical,
            label=spec.label, labelled=labelled if lab_ok else None, metric_name=metric,
            title=f"{spec.tenant}/{spec.name} monitor {run_id} (model v{version.version})",
            summary=summary,
        )
        report = out_dir / "report.html"
        monitoring.write_atomic(report, page)
        result["report"] = str(report)
        metrics = {
            "drift_share": feature_drift.share,
            "n_drifted": float(feature_drift.n_drifted),
            "prediction_drift_score": score_drift.score,
            "rows": float(len(traffic)),
            "labelled_rows": float(len(labelled)),
            "retrain": float(decision.retrain),
        }
        if perf.get("value") is not None:
            metrics["performance"] = perf["value"]
            metrics["accuracy"] = perf["accuracy"]
        result["mlflow_run_id"] = _log_to_mlflow(
            client, spec, version, rid, run_id, report, metrics, tags
        )
        drift = feature_drift
    prom = monitoring.prometheus_text(result, tenant=spec.tenant, project=spec.name, drift=drift)
    monitoring.write_atomic(paths.monitor / "metrics.prom", prom)
    monitoring.write_atomic(
        out_dir / "result.json",
        json.dumps(result, default=str, indent=2, sort_keys=True),
    )
    log.info("monitor %s: %s", run_id, result["reason"])
    return result
