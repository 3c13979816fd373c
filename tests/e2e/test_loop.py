"""End to end: the whole loop through the real Airflow REST API.

`airloop up` starts the real platform (embedded PostgreSQL, Airflow api-server,
scheduler, dag-processor and triggerer, MLflow, MLServer) on free ports under a temp
AIRLOOP_HOME; `airloop demo` then drives ingest → materialize → train (Ray Tune) →
register → gate → deploy → traffic + labels → monitor (no drift) → drifted data and
traffic → monitor (drift) → retrain → new champion, exactly as an external system
would. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import REPO, free_port, venv_bin  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def platform():
    # Not under pytest's basetemp: a later pytest session re-applies mode 0700 to that
    # root, and the embedded PostgreSQL (running as the `postgres` user) loses its data
    # directory mid-test.
    home = Path(tempfile.mkdtemp(prefix="airloop-e2e-"))
    home.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRLOOP_", "MLFLOW_"))}
    env["AIRLOOP_HOME"] = str(home)
    env["AIRLOOP_PROJECTS_DIR"] = str(REPO / "include" / "projects")
    for name in ("postgres", "airflow", "mlflow", "mlserver", "mlserver_grpc", "mlserver_metrics"):
        env[f"AIRLOOP_{name.upper()}_PORT"] = str(free_port())
    up = subprocess.run(
        [venv_bin("control", "airloop"), "up"], env=env, capture_output=True, text=True,
        timeout=600,
    )
    try:
        assert up.returncode == 0, f"airloop up failed:\n{up.stdout}\n{up.stderr}"
        yield env
    finally:
        subprocess.run([venv_bin("control", "airloop"), "down"], env=env, timeout=180)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def api(platform):
    """The Airflow REST API of the platform, as the local admin."""
    from airloop.api.airflow import AirflowClient
    from airloop.core.settings import load
    from airloop.devstack.auth import admin_credentials

    user, password = admin_credentials(load(environ=platform))
    with AirflowClient(f"http://127.0.0.1:{platform['AIRLOOP_AIRFLOW_PORT']}",
                       user, password) as client:
        yield client


@pytest.fixture(scope="module")
def closed_loop(platform):
    """Run `airloop demo` once (the first test that needs it pays) and return its summary.

    Tests that need a deployed champion and trained runs use this, so each of them also
    passes when it runs alone."""
    proc = subprocess.run(
        [venv_bin("runtime", "airloop"), "demo", "--project", "churn"],
        env=platform, capture_output=True, text=True, timeout=1800,
    )
    print(proc.stdout[-6000:])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.split("=== airloop demo summary ===", 1)[1].split("\n[")[0])


def test_bad_trigger_conf_is_rejected(api):
    from airloop.api.airflow import AirflowAPIError

    api.wait_for_dag("churn__train")
    with pytest.raises(AirflowAPIError) as err:
        api.trigger("churn__train", {"trigger": "because-i-said-so"})
    assert 400 <= err.value.status < 500
    assert "trigger" in err.value.body


def test_unknown_dag_is_404(api):
    from airloop.api.airflow import AirflowAPIError

    with pytest.raises(AirflowAPIError) as err:
        api.trigger("nope__train")
    assert err.value.status == 404


def test_the_loop_closes(platform, closed_loop):
    """`airloop demo`: first champion, no drift on normal traffic, drift → retrain → v2."""
    summary = closed_loop
    assert summary["first_champion"]["version"] != summary["retrained"]["version"]
    assert summary["retrained"]["promoted"] is True
    assert summary["drift"]["share"] >= 0.3
    assert summary["retrained"]["holdout"] >= summary["retrained"]["champion_on_same_holdout"]

    # Lineage on the served model version, read back from the real MLflow registry.
    import mlflow

    client = mlflow.MlflowClient(f"http://127.0.0.1:{platform['AIRLOOP_MLFLOW_PORT']}")
    mv = client.get_model_version_by_alias("demo.churn", "champion")
    assert mv.version == str(summary["retrained"]["version"])
    for tag in ("airloop.git_commit", "airloop.data_version", "airloop.feature_views",
                "airloop.dag_run_id"):
        assert mv.tags.get(tag), f"champion v{mv.version} lacks lineage tag {tag}"
    assert mv.tags["airloop.trigger"] == "drift"


def _post(url, body):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_malformed_inference_is_4xx_and_server_keeps_serving(platform, closed_loop):
    base = f"http://127.0.0.1:{platform['AIRLOOP_MLSERVER_PORT']}/v2/models/demo-churn/infer"
    bad = [
        {"inputs": []},
        {"inputs": [{"name": "customer_id", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
        {"inputs": [{"name": "no_such_column", "shape": [1], "datatype": "FP64", "data": [1]}]},
        {"inputs": [{"name": "customer_id", "shape": [1], "datatype": "INT64",
                     "data": [987654321]}]},
    ]
    for body in bad:
        status, text = _post(base, body)
        assert 400 <= status < 500, (body, status, text)
        assert text, "a 4xx must say what was wrong"
    import pandas as pd

    dataset = Path(platform["AIRLOOP_HOME"]) / "data/demo/churn/dataset/features.parquet"
    known = int(pd.read_parquet(dataset, columns=["customer_id"])["customer_id"].iloc[0])
    status, out = _post(
        base,
        {"inputs": [{"name": "customer_id", "shape": [1], "datatype": "INT64",
                     "data": [known]}]},
    )
    assert status == 200, out
    assert {o["name"] for o in out["outputs"]} >= {"score", "prediction"}


def test_rerunning_a_train_run_creates_no_second_version(platform, api, closed_loop):
    import mlflow

    runs = [r for r in api.dag_runs("churn__train", limit=10) if r.state.value == "success"]
    assert runs, "the loop leaves successful train runs behind"
    run_id = runs[-1].dag_run_id
    client = mlflow.MlflowClient(f"http://127.0.0.1:{platform['AIRLOOP_MLFLOW_PORT']}")
    before = sorted(int(v.version) for v in client.search_model_versions("name='demo.churn'"))
    cleared = api.clear_task_instances("churn__train", run_id, ["train", "register"])
    assert {t.task_id for t in cleared} == {"train", "register"}
    final = api.wait("churn__train", run_id, timeout=900)
    assert final.state.value == "success"
    after = sorted(int(v.version) for v in client.search_model_versions("name='demo.churn'"))
    assert after == before
