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
import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from airloop.core import predlog
from airloop.core.errors import AirloopError
from airloop.core.io import atomic_write, write_json
from airloop.core.layout import layout
from airloop.core.naming import safe_run_id
from airloop.core.settings import Settings
from airloop.core.spec import ProjectSpec
from airloop.runtime.evaluation import drift, exposition, guardrails, performance, report

log = logging.getLogger(__name__)

SCORE = "score"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--window-hours",
        type=int,
        default=None,
        help="prediction-log window to compare with the reference (default: drift.window_hours)",
    )


def read_traffic(spec: ProjectSpec, settings: Settings, start: datetime,
                 end: datetime) -> pd.DataFrame:
    """Logged predictions in ``[start, end)`` as a frame (features, score, entity, id,
    row, version) with ``label`` from the feedback log where present (last label wins)."""
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
    client = MlflowClient()
    try:
        return client, client.get_model_version_by_alias(spec.model_name, "champion")
    except MlflowException as exc:
        raise AirloopError(
            f"monitor: registered model {spec.model_name!r} has no 'champion' alias "
            f"(train and promote a model first)"
        ) from exc


def _reference(client: MlflowClient, run_id: str, spec: ProjectSpec) -> pd.DataFrame:
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

    ``retrain`` = (dataset drift of the features or performance degradation) and the
    guard rails (cool-down, max retrains per day) allow it; prediction drift of the score
    is reported beside it. Idempotent per ``run_id``: the report and artifacts are
    overwritten, the monitoring run is reused and a recorded retrain decision is
    returned again instead of being counted twice.
    """
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
    feature_drift = None
    if len(traffic) < policy.min_rows:
        result["reason"] = (
            f"no verdict: {len(traffic)} logged predictions in the last {hours} h "
            f"(drift.min_rows is {policy.min_rows})"
        )
    else:
        reference = _reference(client, version.run_id, spec)
        features = spec.feature_columns
        categorical = [c.name for c in spec.columns if c.dtype == "string" and c.name in features]
        # The dataset verdict is over the features; the score is prediction drift.
        feature_drift = drift.compute_drift(
            reference, traffic, features, categorical=categorical,
            share_threshold=policy.share_threshold,
        )
        score_drift = drift.prediction_drift(reference, traffic, SCORE)
        metric = spec.metric.name
        baseline = _holdout_metric(client, version, metric)
        perf: dict[str, Any] = {"metric": metric, "baseline": baseline, "value": None}
        need = performance.min_labels(policy.min_rows)
        lab_ok = len(labelled) >= need and labelled[spec.label].nunique() == 2
        if lab_ok:
            perf = performance.evaluate_performance(
                labelled, label=spec.label, metric_name=metric, baseline=baseline,
                max_drop=policy.performance_drop,
            )
        else:
            perf["note"] = f"{len(labelled)} labelled rows (need {need} with both classes)"
        why = []
        if feature_drift.dataset_drift:
            why.append(
                f"data drift in {feature_drift.n_drifted}/{len(feature_drift.columns)} columns "
                f"(share {feature_drift.share:.2f} >= {policy.share_threshold})"
            )
        if perf.get("degraded"):
            why.append(
                f"{metric} {perf['value']:.3f} is {perf['drop']:.3f} below holdout "
                f"{baseline:.3f} (drop limit {policy.performance_drop})"
            )
        decision = guardrails.decide_retrain(
            state_path, run_id, wanted=bool(why),
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
                                "drifted": c.drifted}
                     for c in (*feature_drift.columns, score_drift)},
        )
        summary = {k: result[k] for k in (
            "rows", "labelled_rows", "model_version", "drift", "drift_share",
            "drifted_columns", "prediction_drift", "degraded", "retrain", "reason")}
        summary["performance"] = {k: perf.get(k) for k in ("metric", "value", "baseline", "drop")}
        page = report.build_report(
            reference, traffic, feature_drift, score_drift, features=features,
            categorical=categorical, score=SCORE, label=spec.label,
            labelled=labelled if lab_ok else None, metric_name=metric,
            title=f"{spec.tenant}/{spec.name} monitor {run_id} (model v{version.version})",
            summary=summary,
        )
        report_path = atomic_write(out_dir / "report.html", page)
        result["report"] = str(report_path)
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
            client, spec, version, rid, run_id, report_path, metrics, tags
        )
    atomic_write(paths.monitor / "metrics.prom", exposition.render(
        result, tenant=spec.tenant, project=spec.name, drift=feature_drift))
    write_json(out_dir / "result.json", result)
    log.info("monitor %s: %s", run_id, result["reason"])
    return result
