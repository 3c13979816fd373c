"""Deploy step + model server, end to end on real components.

A real MLflow server (``mlflow_server``), a model trained and registered here on small
synthetic data for the demo ``churn`` spec, the project's Feast SQLite online store
written through the runtime's own Feast store with the real SDK, and a real
``mlserver start`` process from the serving venv running ``AirloopRuntime``. Nothing is
mocked.

The server and the registered versions are shared by the module (``world``); what a
test needs served is a fixture (``served``: version 1 is served; ``fresh_server``:
nothing is, so the next deploy is a first one), and every test sends the requests it
reads back, under ids of its own. So each test passes alone and in any order.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from helpers import PROJECTS, free_port, stop, venv_bin, wait_http

from airloop.core.io import http_json
from airloop.core.v2 import frame_columns, v2_request

N_ROWS = 240
ONLINE_ENTITIES = 40


def _post(url: str, body, timeout: float = 30.0):
    return http_json("POST", url, body, timeout=timeout)


def _rid(what: str) -> str:
    return f"req-{what}-{uuid.uuid4().hex[:8]}"


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


def _write_online(spec, settings, frame):
    """Write the first ONLINE_ENTITIES entities to the project's online store with the
    real Feast SDK, through the runtime's own store (what materialize does)."""
    from airloop.runtime.features import store

    fs = store.apply(spec, settings)
    online = frame.iloc[:ONLINE_ENTITIES]
    for view, features in spec.feature_views.items():
        fs.write_to_online_store(view, online[[spec.entity_key, spec.timestamp, *features]])
    return fs


@pytest.fixture(scope="module")
def world(mlflow_server):
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
    _write_online(spec, settings, frame)

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


@pytest.fixture
def fresh_server(world):
    """Nothing of the project is served: unloaded from MLServer, its folder removed."""
    spec, settings = world["spec"], world["settings"]
    name = spec.serving_name
    http_json("POST", f"{settings.model_server_url}/v2/repository/models/{name}/unload")
    shutil.rmtree(settings.model_repository / name, ignore_errors=True)
    status, _ = http_json("GET", f"{settings.model_server_url}/v2/models/{name}/ready")
    assert status != 200, "the model is still served"
    return world


@pytest.fixture
def served(world):
    """Version 1 is served (deployed by the step; a no-op when it already is)."""
    from airloop.runtime.steps import deploy

    result = deploy.run(world["spec"], run_id=world["runs"][0], settings=world["settings"])
    assert result["version"] == world["versions"][0]
    return world


def _infer_url(w):
    return f"{w['settings'].model_server_url}/v2/models/{w['spec'].serving_name}/infer"


def _full_request(w, rows: pd.DataFrame, rid: str | None = None) -> dict:
    return v2_request(frame_columns(rows[w["spec"].feature_columns]), rid,
                      parameters={"content_type": "pd"})


def _entity_request(w, ids, rid=None) -> dict:
    return v2_request({w["spec"].entity_key: list(ids)}, rid)


def _outputs(answer):
    return {o["name"]: o["data"] for o in answer["outputs"]}


def test_deploy_without_a_registered_version_fails(world):
    from airloop.core.errors import AirloopError
    from airloop.runtime.steps import deploy

    with pytest.raises(AirloopError, match="no registered version .*'no_such_run'"):
        deploy.run(world["spec"], run_id="no_such_run", settings=world["settings"])


def test_deploy_then_infer_with_full_features(fresh_server):
    from airloop.runtime.steps import deploy

    world = fresh_server
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
    rid = _rid("full")
    status, answer = _post(_infer_url(world), _full_request(world, rows, rid))
    assert status == 200, answer
    assert answer["id"] == rid
    out = _outputs(answer)
    expected = world["models"][0].predict_proba(rows[spec.feature_columns])[:, 1]
    assert out["score"] == pytest.approx(expected.tolist(), abs=1e-9)
    assert out["prediction"] == [int(s >= 0.5) for s in expected]
    # an sklearn model with a signature is called directly (the runtime has enforced the
    # signature itself); the scores above match the estimator's own predict_proba
    assert "predict: estimator" in world["log"].read_text()


def test_infer_with_entity_ids_only_joins_online_features(served):
    world = served
    spec = world["spec"]
    ids = [1, 7, 40]
    rid = _rid("entity")
    status, answer = _post(_infer_url(world), _entity_request(world, ids, rid))
    assert status == 200, answer
    assert answer["id"] == rid
    rows = world["frame"].set_index(spec.entity_key).loc[ids, spec.feature_columns]
    expected = world["models"][0].predict_proba(rows)[:, 1]
    assert _outputs(answer)["score"] == pytest.approx(expected.tolist(), abs=1e-9)
    # no id in the request: the server makes one and returns it
    status, answer = _post(_infer_url(world), _entity_request(world, [2]))
    assert status == 200 and uuid.UUID(answer["id"])


def _predict(world, entity_ids, rows) -> tuple[str, str]:
    """One entity-only and one full-feature request; their ids."""
    by_entity, full = _rid("entity"), _rid("full")
    for body in (_entity_request(world, entity_ids, by_entity), _full_request(world, rows, full)):
        status, answer = _post(_infer_url(world), body)
        assert status == 200, answer
    return by_entity, full


def test_prediction_log_has_every_row_with_its_id(served):
    from airloop.core.predlog import read_window

    world = served
    by_entity, by_features = _predict(world, [1, 7, 40], world["frame"].iloc[100:103])
    now = datetime.now(UTC)
    records = list(read_window(world["paths"].predictions, now - timedelta(hours=1),
                               now + timedelta(minutes=1)))
    mine = sorted((r["row"], r["entity"]) for r in records if r["id"] == by_entity)
    assert mine == [(0, 1), (1, 7), (2, 40)]
    full = [r for r in records if r["id"] == by_features]
    assert [r["row"] for r in full] == [0, 1, 2]
    rec = full[0]
    assert rec["model"] == world["spec"].serving_name and rec["version"] == world["versions"][0]
    assert set(rec["features"]) == set(world["spec"].feature_columns)
    assert rec["prediction"] == int(rec["score"] >= 0.5)


def test_feedback_endpoint_and_cli_append_labels(served, tmp_path):
    from airloop.core.predlog import read_window
    from airloop.serving import cli as serving_cli

    world = served
    by_entity, by_features = _predict(world, [1, 7, 40], world["frame"].iloc[100:103])
    never = _rid("never-predicted")
    url = _infer_url(world).rsplit("/", 1)[0] + "/feedback"
    body = {"labels": [{"id": by_entity, "row": 0, "label": 1},
                       {"id": by_entity, "row": 2, "label": 0},
                       {"id": never, "row": 0, "label": 1}]}
    status, answer = _post(url, body)
    assert status == 200, answer
    assert answer["stored"] == 3 and answer["unknown_ids"] == 1
    for bad in ({"labels": [{"id": by_entity, "row": 0, "label": 7}]},
                {"labels": [{"row": 0, "label": 1}]}, {"labels": []}, {"nope": 1}):
        status, answer = _post(url, bad)
        assert status == 400 and answer["error"], (bad, answer)
    status, answer = _post(
        f"{world['settings'].model_server_url}/v2/models/not-served/feedback", body
    )
    assert status == 404

    labels = tmp_path / "labels.csv"
    labels.write_text(f"id,row,label\n{by_features},0,1\n{by_features},1,0\n")
    parser = serving_cli.build_parser()
    args = parser.parse_args(["feedback", "--project", "churn", "--file", str(labels)])
    assert args.func(args, world["settings"]) == 0

    now = datetime.now(UTC)
    got = {(r["id"], r["row"]): r["label"] for r in read_window(
        world["paths"].feedback, now - timedelta(hours=1), now + timedelta(minutes=1))}
    assert got[(by_entity, 0)] == 1 and got[(by_entity, 2)] == 0
    assert got[(never, 0)] == 1
    assert got[(by_features, 0)] == 1 and got[(by_features, 1)] == 0

    bad_file = tmp_path / "bad.csv"
    bad_file.write_text("id,row,label\nx,0,1\ny,0,maybe\n")
    args = parser.parse_args(["feedback", "--project", "churn", "--file", str(bad_file)])
    from airloop.core.errors import AirloopError

    with pytest.raises(AirloopError, match="label must be 0 or 1"):
        args.func(args, world["settings"])


def test_malformed_payloads_are_4xx_and_the_server_keeps_serving(served):
    world = served
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


def test_redeploy_same_version_is_a_noop_and_a_new_version_swaps(fresh_server):
    from airloop.runtime.steps import deploy

    world = fresh_server
    spec, settings = world["spec"], world["settings"]
    first = deploy.run(spec, run_id=world["runs"][0], settings=settings)
    assert first["loaded"] is True and first["version"] == world["versions"][0]
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
    status, _ = http_json("GET", f"{base}/v2/models/{spec.serving_name}/versions/{old}/ready")
    assert status != 200
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
