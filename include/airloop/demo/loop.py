"""``airloop demo``: the whole closed loop on the bundled demo project, over the REST APIs.

This is what an external system does with airloop, step by step:

1. land 14 days of normal data → trigger ``<p>__ingest`` (validate, version, offline
   store); materialization follows on the dataset asset;
2. trigger ``<p>__train`` → Ray Tune search → registry → gate → deploy → champion;
3. one prediction from entity ids only (features joined from the online store);
4. normal traffic + ground-truth labels → ``<p>__monitor``: no drift, no retrain;
5. drifted data lands and drifted traffic + labels arrive → ``<p>__monitor``: drift
   found → the monitor triggers ``<p>__train`` → a new champion is deployed;
6. a summary with versions, metrics, drift share and links.

It resets only the demo project's own data and registered model first, so running it
twice works. Runs in the runtime environment (the generator needs numpy/pandas).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd

from airloop.api.airflow import AirflowClient
from airloop.core.errors import AirloopError
from airloop.core.io import error_detail, http_json
from airloop.core.layout import layout
from airloop.core.settings import Settings
from airloop.core.spec import load_spec
from airloop.core.v2 import frame_columns, v2_request
from airloop.demo import churn
from airloop.demo.generate import write_batch
from airloop.devstack.auth import admin_credentials

if TYPE_CHECKING:
    from airflow_client.client import DAGRunResponse

BASE_DAYS = 14
DRIFT_DAYS = 4
ROWS_PER_DAY = 800
TRAFFIC_ROWS = 600
BATCH = 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``airloop demo``."""
    p.add_argument("--project", default="churn", help="demo project spec (needs data.generator)")
    p.add_argument("--keep", action="store_true", help="do not reset the project's state first")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for one DAG run")


class Say:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}", flush=True)


def _post(url: str, body: Any) -> Any:
    status, answer = http_json("POST", url, body)
    if status != 200:
        raise AirloopError(f"POST {url} -> {status}: {error_detail(answer)}")
    return answer


def send_traffic(endpoint: str, feedback_url: str, features, labels, say, tag: str) -> int:
    sent = 0
    for start in range(0, len(features), BATCH):
        chunk = features.iloc[start : start + BATCH]
        rid = f"{tag}-{uuid.uuid4().hex[:12]}"
        _post(endpoint, v2_request(frame_columns(chunk), rid, parameters={"content_type": "pd"}))
        _post(
            feedback_url,
            {
                "labels": [
                    {"id": rid, "row": i, "label": int(labels.iloc[start + i])}
                    for i in range(len(chunk))
                ]
            },
        )
        sent += len(chunk)
    say(f"sent {sent} {tag} predictions and their ground-truth labels")
    return sent


def _share(result: dict) -> str:
    share = result.get("drift_share")
    return "n/a" if share is None else f"{share:.2f}"


def _reset(spec, settings, say) -> None:
    root = layout(spec, settings).root
    if root.exists():
        shutil.rmtree(root)
    try:
        client = mlflow.MlflowClient(settings.tracking_uri)
        client.delete_registered_model(spec.model_name)
        say(f"reset: removed registered model {spec.model_name} and {root}")
    except Exception as exc:  # absent model is the normal first-run case
        if "RESOURCE_DOES_NOT_EXIST" not in str(exc) and "not found" not in str(exc).lower():
            raise AirloopError(f"cannot reset demo model {spec.model_name}: {exc}") from exc
        say(f"reset: cleared {root}")


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    """``airloop demo``: the loop above, on the platform ``settings`` describe."""
    say = Say()
    spec = load_spec(args.project, settings.projects_dir)
    if not spec.data.generator:
        raise AirloopError(f"project {spec.name!r} has no data.generator; it cannot be demoed")
    user, password = admin_credentials(settings)
    airflow_url = f"http://{settings.host}:{settings.ports['airflow']}"
    api = AirflowClient(airflow_url, user, password)
    health = api.health()
    bad = {
        k: v.get("status") for k, v in health.to_dict().items() if v.get("status") != "healthy"
    }
    if bad:
        raise AirloopError(f"Airflow is not healthy ({bad}); run `airloop up` first")
    p = spec.name
    dags = [f"{p}__{k}" for k in ("ingest", "materialize", "train", "monitor", "batch_predict")]
    for dag_id in dags:
        api.wait_for_dag(dag_id)
        api.unpause(dag_id)
    say(f"Airflow {airflow_url}: DAGs {', '.join(dags)} parsed and unpaused")

    if not args.keep:
        _reset(spec, settings, say)
    paths = layout(spec, settings)
    today = datetime.now(UTC).date()
    start = today - timedelta(days=BASE_DAYS + DRIFT_DAYS)
    drift_day = BASE_DAYS

    def land(days: range) -> None:
        paths.landing.mkdir(parents=True, exist_ok=True)
        for day in days:
            frame = churn.generate_day(
                spec, day, start=start, rows=ROWS_PER_DAY, drift_from_day=drift_day, seed=7
            )
            write_batch(frame, paths.landing, f"{p}_{(start + timedelta(days=day)).isoformat()}")
        say(f"landed {len(days)} daily files ({len(days) * ROWS_PER_DAY} rows) in {paths.landing}")

    def finish(dag_id: str, rid: str) -> DAGRunResponse:
        """Wait for a run, printing task state changes; fail unless it succeeded."""
        final = api.wait(
            dag_id,
            rid,
            timeout=args.timeout,
            progress=lambda ch: say("   " + ", ".join(f"{k}={v}" for k, v in sorted(ch.items()))),
        )
        if final.state.value != "success":
            raise AirloopError(f"{dag_id} run {rid} ended {final.state.value}; see the Airflow UI")
        return final

    def run_dag(dag_id: str, conf: dict | None = None) -> tuple[str, DAGRunResponse]:
        rid = api.trigger(dag_id, conf).dag_run_id
        say(f"triggered {dag_id} ({rid})")
        return rid, finish(dag_id, rid)

    def ingest_and_materialize() -> None:
        rid, _ = run_dag(f"{p}__ingest")
        out = api.xcom(f"{p}__ingest", rid, "ingest")
        say(f"ingest: {out.get('rows_added')} rows, data version {out.get('data_version')}")
        # The dataset asset schedules materialize; wait for that run (or start one).
        deadline = time.monotonic() + 60
        since = datetime.now(UTC) - timedelta(seconds=5)
        mat_id = f"{p}__materialize"
        while time.monotonic() < deadline:
            runs = [
                r
                for r in api.dag_runs(mat_id, limit=5)
                if r.run_type.value == "asset_triggered"
                and r.run_after >= since - timedelta(minutes=5)
                and r.state.value != "failed"
            ]
            if runs:
                final = api.wait(mat_id, runs[0].dag_run_id, timeout=args.timeout)
                if final.state.value == "success":
                    say("materialize (asset-triggered): online store updated")
                    return
            time.sleep(2)
        run_dag(mat_id)

    # 1. data --------------------------------------------------------------------
    land(range(0, BASE_DAYS))
    ingest_and_materialize()

    # 2. train -------------------------------------------------------------------
    train_id = f"{p}__train"
    rid, _ = run_dag(train_id, {"trigger": "api", "reason": "demo: first model"})
    first = api.xcom(train_id, rid, "train")
    gate1 = api.xcom(train_id, rid, "gate")
    deploy1 = api.xcom(train_id, rid, "deploy")
    say(
        f"model {spec.model_name} v{gate1['challenger_version']}: "
        f"{first['metric_name']}={first['metric']:.4f} ({first['trials']} trials, "
        f"{first.get('pruned_trials', 0)} stopped early by ASHA) -> champion"
    )
    endpoint = deploy1["endpoint"]
    feedback_url = deploy1.get("feedback_endpoint") or endpoint.rsplit("/", 1)[0] + "/feedback"
    say(f"endpoint: {endpoint}")

    # 3. one prediction from entity ids only ---------------------------------------
    known = pd.read_parquet(paths.dataset_file, columns=[spec.entity_key])[spec.entity_key]
    ids = [int(i) for i in known.drop_duplicates().head(2)]
    answer = _post(endpoint, v2_request({spec.entity_key: ids}, f"demo-{uuid.uuid4().hex[:8]}"))
    outputs = {o["name"]: o["data"] for o in answer["outputs"]}
    say(f"prediction for {spec.entity_key}={ids} (features from the online store): {outputs}")

    # 4. normal traffic → monitor: no drift ----------------------------------------
    feats, labels = churn.traffic(
        spec, BASE_DAYS - 1, TRAFFIC_ROWS, start=start, drift_from_day=drift_day, seed=11
    )
    send_traffic(endpoint, feedback_url, feats, labels, say, "normal")
    monitor_id = f"{p}__monitor"
    rid, _ = run_dag(monitor_id)
    m1 = api.xcom(monitor_id, rid, "monitor")
    say(
        f"monitor: drift={m1['drift']} share={_share(m1)} "
        f"retrain={m1['retrain']} ({m1['reason']})"
    )
    if m1["retrain"]:
        raise AirloopError("the monitor asked for a retrain on normal traffic")

    # 5. drift ----------------------------------------------------------------------
    land(range(BASE_DAYS, BASE_DAYS + DRIFT_DAYS))
    ingest_and_materialize()
    # The previous window held normal traffic; start the drifted window clean.
    for folder in (paths.predictions, paths.feedback):
        archive = folder.parent / f"{folder.name}-archive"
        archive.mkdir(parents=True, exist_ok=True)
        for f in folder.glob("*.jsonl"):
            f.rename(archive / f"{f.stem}-{uuid.uuid4().hex[:6]}.jsonl")
    feats, labels = churn.traffic(
        spec,
        BASE_DAYS + DRIFT_DAYS - 1,
        TRAFFIC_ROWS,
        start=start,
        drift_from_day=drift_day,
        seed=12,
    )
    send_traffic(endpoint, feedback_url, feats, labels, say, "drifted")
    before = {r.dag_run_id for r in api.dag_runs(train_id, limit=50)}
    rid, _ = run_dag(monitor_id)
    m2 = api.xcom(monitor_id, rid, "monitor")
    say(
        f"monitor: drift={m2['drift']} share={_share(m2)} "
        f"columns={m2['drifted_columns']} retrain={m2['retrain']} ({m2['reason']})"
    )
    if not m2["retrain"]:
        raise AirloopError("the monitor found no reason to retrain on drifted traffic")
    deadline = time.monotonic() + 60
    retrain_run = None
    while retrain_run is None and time.monotonic() < deadline:
        new = [r for r in api.dag_runs(train_id, limit=50) if r.dag_run_id not in before]
        retrain_run = new[0].dag_run_id if new else None
        time.sleep(1)
    if retrain_run is None:
        raise AirloopError(f"the monitor did not trigger {train_id}")
    say(f"retraining triggered by the monitor: {train_id} ({retrain_run})")
    finish(train_id, retrain_run)
    second = api.xcom(train_id, retrain_run, "train")
    gate2 = api.xcom(train_id, retrain_run, "gate")

    # 6. summary ---------------------------------------------------------------------
    summary = {
        "project": spec.name,
        "first_champion": {"version": gate1["challenger_version"], "holdout": first["metric"]},
        "drift": {
            "share": m2["drift_share"],
            "columns": m2["drifted_columns"],
            "performance": m2.get("performance"),
        },
        "retrained": {
            "version": gate2["challenger_version"],
            "holdout": second["metric"],
            "champion_on_same_holdout": gate2.get("champion_metric"),
            "promoted": gate2["promote"],
        },
        "links": {
            "airflow": airflow_url,
            "mlflow": settings.tracking_uri,
            "endpoint": endpoint,
            "report": m2.get("report"),
        },
    }
    print("\n=== airloop demo summary ===")
    print(json.dumps(summary, indent=2, default=str))
    if not gate2["promote"]:
        raise AirloopError("the retrained model did not beat the drifted champion")
    say("done: the loop closed (train → deploy → monitor → drift → retrain → redeploy)")
    return 0
