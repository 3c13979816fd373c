"""Deploy step + model server, end to end on real components.

A real MLflow server (``mlflow_server``), a model trained and registered here on small
synthetic data for the demo ``churn`` spec, a Feast SQLite online store written by the
real Feast SDK, and a real ``mlserver start`` process from the serving venv running
``AirloopRuntime``. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from helpers import PROJECTS, free_port, stop, venv_bin, wait_http

N_ROWS = 240
ONLINE_ENTITIES = 40


def _post(url: str, body, timeout: float = 30.0):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, text


def _frame(spec, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {
        spec.entity_key: np.arange(1, n + 1, dtype="int64"),
        spec.timestamp: [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=i) for i in range(n)],
    }
    for col in spec.columns:
        if col.dtype == "string":
            data[col.name] = rng.choice(list(col.allowed), n)
        elif col.dtype == "int64":
            data[col.name] = rng.integers(int(col.min), int(min(col.max, col.min + 50)) + 1, n)
        else:
            data[col.name] = np.round(rng.uniform(col.min, min(col.max, col.min + 100), n), 3)
    frame = pd.DataFrame(data)
    logit = 0.08 * frame["support_calls_30d"] - 0.05 * frame["tenure_months"] + (
        frame["contract_type"] == "month-to-month"
    ) * 1.5
    frame[spec.label] = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype("int64")
    return frame


def _train_and_register(spec, frame, run_id: str, c: float):
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    X, y = frame[spec.feature_columns], frame[spec.label]
    strings = [c.name for c in spec.columns if c.dtype == "string"]
    model = Pipeline(
        [
            ("prep", ColumnTransformer(
                [("cat", OneHotEncoder(handle_unknown="ignore"), strings)],
                remainder="passthrough")),
            ("clf", LogisticRegression(C=c, max_iter=500)),
        ]
    ).fit(X, y)
    client = mlflow.MlflowClient()
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            pyfunc_predict_fn="predict_proba",
            signature=infer_signature(X, model.predict_proba(X)),
            pip_requirements=["scikit-learn==1.9.1", "pandas==2.3.3"],
        )
    mv = mlflow.register_model(info.model_uri, spec.model_name)
    client.set_model_version_tag(spec.model_name, mv.version, "airloop.dag_run_id", run_id)
    return model, str(mv.version)


def _write_online(spec, settings, frame, tmp_path):
    """Materialize the first ONLINE_ENTITIES entities with the real Feast SDK."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
    from feast.types import Float64, Int64, String

    from airloop.core.layout import layout

    paths = layout(spec, settings)
    paths.feast.mkdir(parents=True, exist_ok=True)
    types = {"int64": Int64, "float64": Float64, "string": String}
    dtypes = {c.name: c.dtype for c in spec.columns}
    source = FileSource(path=str(paths.dataset_file), timestamp_field=spec.timestamp)
    entity = Entity(name=spec.entity_name, join_keys=[spec.entity_key], value_type=ValueType.INT64)
    views = [
        FeatureView(
            name=v.name, entities=[entity], ttl=timedelta(days=3650), source=source,
            schema=[Field(name=f, dtype=types[dtypes[f]]) for f in v.features],
        )
        for v in spec.features.views
    ]
    store = FeatureStore(config=RepoConfig(
        project=f"{spec.tenant}_{spec.name}", registry=str(tmp_path / "registry.db"),
        provider="local", online_store={"type": "sqlite", "path": str(paths.online_store)},
        offline_store={"type": "duckdb"}, entity_key_serialization_version=3,
        repo_path=str(tmp_path),
    ))
    store.apply([entity, *views])
    online = frame.iloc[:ONLINE_ENTITIES]
    for v in spec.features.views:
        store.write_to_online_store(
            v.name, online[[spec.entity_key, spec.timestamp, *v.features]]
        )
    return store


@pytest.fixture(scope="module")
def world(mlflow_server, tmp_path_factory):
    import mlflow

    from airloop.core import settings as config
    from airloop.core.layout import layout
    from airloop.core.spec import load_spec

    spec = load_spec("churn", PROJECTS)
    port = free_port()
    settings = config.load(model_server_url=f"http://127.0.0.1:{port}", tracking_uri=mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    paths = layout(spec, settings)
    frame = _frame(spec, N_ROWS, seed=3)
    paths.dataset.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(paths.dataset_file)
    tag = uuid.uuid4().hex[:8]
    run1, run2 = f"test__{tag}_1", f"test__{tag}_2"
    model1, v1 = _train_and_register(spec, frame, run1, c=1.0)
    model2, v2 = _train_and_register(spec, frame, run2, c=0.01)
    _write_online(spec, settings, frame, tmp_path_factory.mktemp("feast"))

    repo = settings.model_repository
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
        "metrics_port": free_port(), "parallel_workers": 0, "load_models_at_startup": True,
        "metrics_dir": str(settings.home / "serving" / "metrics"),
    }))
    env = {**os.environ, **config.NO_TELEMETRY}
    log = open(repo.parent / "mlserver.log", "w")
    proc = subprocess.Popen([venv_bin("serving", "mlserver"), "start", str(repo)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"{settings.model_server_url}/v2/health/ready", timeout=120, proc=proc)
        yield {
            "spec": spec, "settings": settings, "frame": frame, "paths": paths,
            "runs": (run1, run2), "versions": (v1, v2), "models": (model1, model2),
            "proc": proc, "log": repo.parent / "mlserver.log",
        }
    finally:
        stop(proc)
        log.close()


def _infer_url(w):
    return f"{w['settings'].model_server_url}/v2/models/{w['spec'].serving_name}/infer"


def _full_request(w, rows: pd.DataFrame, rid: str | None = None) -> dict:
    from airloop.runtime.steps.deploy import _v2_input

    body = {"inputs": [_v2_input(c, rows[c].tolist()) for c in w["spec"].feature_columns],
            "parameters": {"content_type": "pd"}}
    if rid:
        body["id"] = rid
    return body


def _entity_request(w, ids, rid=None) -> dict:
    body = {"inputs": [{"name": w["spec"].entity_key, "shape": [len(ids)], "datatype": "INT64",
                        "data": list(ids)}]}
    if rid:
        body["id"] = rid
    return body


def _outputs(answer):
    return {o["name"]: o["data"] for o in answer["outputs"]}


def test_deploy_without_a_registered_version_fails(world):
    from airloop.core.errors import AirloopError
    from airloop.runtime.steps import deploy

    with pytest.raises(AirloopError, match="airloop.dag_run_id"):
        deploy.run(world["spec"], run_id="no_such_run", settings=world["settings"])


def test_deploy_then_infer_with_full_features(world):
    from airloop.runtime.steps import deploy

    spec, settings = world["spec"], world["settings"]
    result = deploy.run(spec, run_id=world["runs"][0], settings=settings)
    assert result["version"] == world["versions"][0] and result["loaded"] is True
    assert result["endpoint"] == _infer_url(world)
    assert result["smoke_input"] == "entity" and 0.0 <= result["smoke_score"] <= 1.0
    ms = json.loads((settings.model_repository / spec.serving_name / "model-settings.json")
                    .read_text())
    assert ms["implementation"] == "airloop.serving.mlserver.AirloopRuntime"
    assert ms["parameters"]["version"] == world["versions"][0]

    rows = world["frame"].iloc[100:103]
    status, answer = _post(_infer_url(world), _full_request(world, rows, "req-full-1"))
    assert status == 200, answer
    assert answer["id"] == "req-full-1"
    out = _outputs(answer)
    expected = world["models"][0].predict_proba(rows[spec.feature_columns])[:, 1]
    assert out["score"] == pytest.approx(expected.tolist(), abs=1e-9)
    assert out["prediction"] == [int(s >= 0.5) for s in expected]
    # an sklearn model with a signature is called directly (the runtime has enforced the
    # signature itself); the scores above match the estimator's own predict_proba
    assert "predict: estimator" in world["log"].read_text()


def test_infer_with_entity_ids_only_joins_online_features(world):
    spec = world["spec"]
    ids = [1, 7, 40]
    status, answer = _post(_infer_url(world), _entity_request(world, ids, "req-entity-1"))
    assert status == 200, answer
    assert answer["id"] == "req-entity-1"
    rows = world["frame"].set_index(spec.entity_key).loc[ids, spec.feature_columns]
    expected = world["models"][0].predict_proba(rows)[:, 1]
    assert _outputs(answer)["score"] == pytest.approx(expected.tolist(), abs=1e-9)
    # no id in the request: the server makes one and returns it
    status, answer = _post(_infer_url(world), _entity_request(world, [2]))
    assert status == 200 and uuid.UUID(answer["id"])


def test_prediction_log_has_every_row_with_its_id(world):
    from airloop.core.predlog import read_window

    now = datetime.now(UTC)
    records = list(read_window(world["paths"].predictions, now - timedelta(hours=1),
                               now + timedelta(minutes=1)))
    mine = sorted((r["row"], r["entity"]) for r in records if r["id"] == "req-entity-1")
    assert mine == [(0, 1), (1, 7), (2, 40)]
    full = [r for r in records if r["id"] == "req-full-1"]
    assert [r["row"] for r in full] == [0, 1, 2]
    rec = full[0]
    assert rec["model"] == world["spec"].serving_name and rec["version"] == world["versions"][0]
    assert set(rec["features"]) == set(world["spec"].feature_columns)
    assert rec["prediction"] == int(rec["score"] >= 0.5)


def test_feedback_endpoint_and_cli_append_labels(world, tmp_path):
    from airloop.core.predlog import read_window
    from airloop.serving import cli as serving_cli

    url = _infer_url(world).rsplit("/", 1)[0] + "/feedback"
    body = {"labels": [{"id": "req-entity-1", "row": 0, "label": 1},
                       {"id": "req-entity-1", "row": 2, "label": 0},
                       {"id": "never-predicted", "row": 0, "label": 1}]}
    status, answer = _post(url, body)
    assert status == 200, answer
    assert answer["stored"] == 3 and answer["unknown_ids"] == 1
    for bad in ({"labels": [{"id": "req-entity-1", "row": 0, "label": 7}]},
                {"labels": [{"row": 0, "label": 1}]}, {"labels": []}, {"nope": 1}):
        status, answer = _post(url, bad)
        assert status == 400 and answer["error"], (bad, answer)
    status, answer = _post(
        f"{world['settings'].model_server_url}/v2/models/not-served/feedback", body
    )
    assert status == 404

    labels = tmp_path / "labels.csv"
    labels.write_text("id,row,label\nreq-full-1,0,1\nreq-full-1,1,0\n")
    parser = serving_cli.build_parser()
    args = parser.parse_args(["feedback", "--project", "churn", "--file", str(labels)])
    assert args.func(args, world["settings"]) == 0

    now = datetime.now(UTC)
    got = {(r["id"], r["row"]): r["label"] for r in read_window(
        world["paths"].feedback, now - timedelta(hours=1), now + timedelta(minutes=1))}
    assert got[("req-entity-1", 0)] == 1 and got[("req-entity-1", 2)] == 0
    assert got[("never-predicted", 0)] == 1
    assert got[("req-full-1", 0)] == 1 and got[("req-full-1", 1)] == 0

    bad_file = tmp_path / "bad.csv"
    bad_file.write_text("id,row,label\nx,0,1\ny,0,maybe\n")
    args = parser.parse_args(["feedback", "--project", "churn", "--file", str(bad_file)])
    from airloop.core.errors import AirloopError

    with pytest.raises(AirloopError, match="label must be 0 or 1"):
        args.func(args, world["settings"])


def test_malformed_payloads_are_4xx_and_the_server_keeps_serving(world):
    spec = world["spec"]
    good = _full_request(world, world["frame"].iloc[5:6])
    unknown_col = json.loads(json.dumps(good))
    unknown_col["inputs"][0]["name"] = "no_such_column"
    wrong_type = json.loads(json.dumps(good))
    idx = spec.feature_columns.index("monthly_charges")
    wrong_type["inputs"][idx].update(datatype="BYTES", data=["expensive"])
    missing_value = json.loads(json.dumps(good))  # null -> NaN, which this estimator rejects
    missing_value["inputs"][idx]["data"] = [None]
    cases = {
        "null for float (estimator rejects NaN)": (missing_value, "the model rejected the input"),
        "unknown column": (unknown_col, "unknown column"),
        "string for float": (wrong_type, "monthly_charges"),
        "empty inputs": ({"inputs": []}, "no inputs"),
        "empty rows": (_entity_request(world, []), "no rows"),
        "unknown entity": (_entity_request(world, [987654]), "987654"),
        "string entity": ({"inputs": [{"name": spec.entity_key, "shape": [1],
                                       "datatype": "BYTES", "data": ["x"]}]}, spec.entity_key),
        "shape mismatch": ({"inputs": [{"name": spec.entity_key, "shape": [3],
                                        "datatype": "INT64", "data": [1]}]}, "shape"),
    }
    for what, (body, needle) in cases.items():
        status, answer = _post(_infer_url(world), body)
        assert 400 <= status < 500, (what, status, answer)
        assert needle in answer["error"], (what, answer)
        status, answer = _post(_infer_url(world), good)
        assert status == 200, (what, answer)
    assert world["proc"].poll() is None


def test_redeploy_same_version_is_a_noop_and_a_new_version_swaps(world):
    from airloop.runtime.steps import deploy

    spec, settings = world["spec"], world["settings"]
    again = deploy.run(spec, run_id=world["runs"][0], settings=settings)
    assert again["loaded"] is False and again["version"] == world["versions"][0]

    second = deploy.run(spec, run_id=world["runs"][1], settings=settings)
    assert second["loaded"] is True and second["version"] == world["versions"][1]
    status, answer = _post(_infer_url(world), _entity_request(world, [3]))
    assert status == 200 and answer["model_version"] == world["versions"][1]
    rows = world["frame"].set_index(spec.entity_key).loc[[3], spec.feature_columns]
    assert _outputs(answer)["score"][0] == pytest.approx(
        world["models"][1].predict_proba(rows)[0, 1], abs=1e-9)
    # the old version is gone from the server; the feedback route still works
    base = settings.model_server_url
    old = world["versions"][0]
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{base}/v2/models/{spec.serving_name}/versions/{old}/ready")
    status, answer = _post(_infer_url(world).rsplit("/", 1)[0] + "/feedback",
                           {"labels": [{"id": answer["id"], "label": 1}]})
    assert status == 200 and answer["unknown_ids"] == 0

    # p50 latency of a 1-row, entity-only request (informational, not asserted)
    times = []
    for i in range(40):
        t0 = time.perf_counter()
        status, _ = _post(_infer_url(world), _entity_request(world, [1 + i % ONLINE_ENTITIES]))
        times.append(time.perf_counter() - t0)
        assert status == 200
    print(f"\np50 latency, 1-row entity-only request: {statistics.median(times) * 1000:.2f} ms")
