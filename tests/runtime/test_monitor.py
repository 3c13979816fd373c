"""The monitor step against a real MLflow server, plus the pure drift/guard-rail code.

Each scenario gets its own tenant (own data folder, guard-rail state and registered
model); all of them register the same tiny sklearn model, logged once with the train
step's layout (``model`` with ``predict_proba``, ``reference/reference.parquet``,
``holdout/holdout.parquet``, ``holdout_roc_auc``).
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airloop.core.errors import AirloopError
from airloop.runtime.evaluation import drift, guardrails

FEATURES = ["x1", "x2", "x3", "x4", "plan"]
PLANS = ["basic", "plus", "pro"]


def make_frame(n: int, seed: int, shift: dict[str, float] | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "x1": rng.normal(0, 1, n),
        "x2": rng.gamma(2.0, 2.0, n),
        "x3": rng.uniform(0, 10, n),
        "x4": rng.lognormal(0, 0.5, n),
        "plan": rng.choice(PLANS, n, p=[0.5, 0.3, 0.2]),
    })
    for col, sd in (shift or {}).items():
        frame[col] = frame[col] + sd * frame[col].std()
    z = 1.5 * frame.x1 - 0.4 * (frame.x2 - 4) + 0.2 * (frame.x3 - 5) + (frame.plan == "pro") * 1.0
    frame["churned"] = (rng.uniform(0, 1, n) < 1 / (1 + np.exp(-z))).astype("int64")
    return frame


def spec_for(tenant: str, **drift):
    from airloop.core.spec import parse_spec

    raw = {
        "name": "montest",
        "tenant": tenant,
        "data": {
            "entity": {"name": "customer", "join_key": "customer_id"},
            "timestamp": "event_timestamp",
            "label": "churned",
            "columns": [
                {"name": "x1", "dtype": "float64"},
                {"name": "x2", "dtype": "float64"},
                {"name": "x3", "dtype": "float64"},
                {"name": "x4", "dtype": "float64"},
                {"name": "plan", "dtype": "string", "allowed": PLANS},
            ],
        },
        "features": {"views": [{"name": "v", "features": FEATURES}]},
        "model": {"family": "airloop.runtime.models:Logistic",
                  "search_space": {"c": {"type": "loguniform", "low": 0.01, "high": 1.0}}},
        "metric": {"name": "roc_auc"},
        "drift": {"share_threshold": 0.3, "window_hours": 24, "min_rows": 100,
                  "performance_drop": 0.05, "cooldown_hours": 6, "max_retrains_per_day": 2,
                  **drift},
    }
    return parse_spec(raw, Path(f"/virtual/{tenant}/montest.yaml"))


@pytest.fixture(scope="module")
def trained(mlflow_server):
    """One logged model run with the train step's artifact layout; returns (model uri, model)."""
    import mlflow
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    mlflow.set_tracking_uri(mlflow_server)
    model = make_pipeline(
        ColumnTransformer([("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"])],
                          remainder="passthrough"),
        LogisticRegression(max_iter=500),
    )
    train = make_frame(3000, seed=1)
    model.fit(train[FEATURES], train.churned)
    reference = make_frame(2000, seed=2)
    reference["score"] = model.predict_proba(reference[FEATURES])[:, 1]
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(reference.churned, reference.score)
    mlflow.set_experiment(f"montest-{uuid.uuid4().hex[:6]}")
    with mlflow.start_run(tags={"airloop.dag_run_id": "train-1"}), \
            tempfile.TemporaryDirectory() as tmp:
        info = mlflow.sklearn.log_model(
            model, name="model", pyfunc_predict_fn="predict_proba",
            pip_requirements=["scikit-learn", "pandas"],
        )
        for name, frame in (("reference", reference), ("holdout", reference)):
            path = Path(tmp) / f"{name}.parquet"
            frame.to_parquet(path)
            mlflow.log_artifact(str(path), name)
        mlflow.log_metric("holdout_roc_auc", auc)
    return info.model_uri, model


@pytest.fixture
def project(trained, mlflow_server):
    """A fresh tenant whose champion is the trained model: ``project(**drift) -> spec``."""
    from mlflow import MlflowClient

    from airloop.core import settings as config

    model_uri, _ = trained

    def make(**drift):
        import mlflow

        spec = spec_for(f"t{uuid.uuid4().hex[:8]}", **drift)
        client = MlflowClient(mlflow_server)
        mv = mlflow.register_model(model_uri, spec.model_name,
                                   tags={"airloop.metric": "0.8", "airloop.dag_run_id": "train-1"})
        client.set_registered_model_alias(spec.model_name, "champion", mv.version)
        return spec, config.load()

    return make


def send(spec, settings, model, frame: pd.DataFrame, labels: bool | str = True) -> None:
    """Append ``frame`` to the prediction log (and feedback log) like the model server."""
    from airloop.core.layout import layout
    from airloop.core.predlog import JsonlLog

    paths = layout(spec, settings)
    scores = model.predict_proba(frame[FEATURES])[:, 1]
    ts = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    req = uuid.uuid4().hex
    JsonlLog(paths.predictions).append(
        {"id": req, "row": i, "ts": ts, "model": spec.serving_name, "version": "1",
         "entity": i, "features": {f: frame[f].iloc[i] for f in FEATURES},
         "score": float(scores[i]), "prediction": int(scores[i] >= 0.5)}
        for i in range(len(frame))
    )
    if labels:
        truth = frame.churned if labels is True else 1 - frame.churned
        JsonlLog(paths.feedback).append(
            {"id": req, "row": i, "ts": ts, "label": int(truth.iloc[i])}
            for i in range(len(frame))
        )


def monitor(spec, settings, run_id):
    from airloop.runtime.steps import monitor as step

    return step.run(spec, run_id=run_id, settings=settings)


def sample_key(name: str, labels: dict[str, str]) -> tuple:
    return name, tuple(sorted(labels.items()))


def samples(exposition: str) -> dict[tuple, float]:
    """``{(metric name, sorted labels): value}`` of a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return {sample_key(s.name, s.labels): s.value
            for family in text_string_to_metric_families(exposition) for s in family.samples}


def monitoring_runs(spec, run_id):
    from mlflow import MlflowClient

    client = MlflowClient()
    version = client.get_model_version_by_alias(spec.model_name, "champion")
    exp = client.get_run(version.run_id).info.experiment_id
    return client.search_runs(
        [exp], f"tags.`airloop.kind` = 'monitor' and tags.`airloop.dag_run_id` = '{run_id}'"
    )


# -- the step -------------------------------------------------------------------------


def test_stationary_traffic_no_drift_with_performance_and_report(project, trained):
    from mlflow import MlflowClient

    spec, settings = project()
    model = trained[1]
    send(spec, settings, model, make_frame(400, seed=10))
    res = monitor(spec, settings, "scheduled__day1")

    assert res["rows"] == 400 and res["labelled_rows"] == 400
    assert res["drift"] is False and res["drifted_columns"] == []
    assert res["prediction_drift"] is False
    assert res["retrain"] is False and res["degraded"] is False
    perf = res["performance"]
    assert perf["metric"] == "roc_auc" and 0.6 < perf["roc_auc"] <= 1.0
    assert 0.5 < perf["accuracy"] <= 1.0 and perf["baseline"] is not None

    report = Path(res["report"])
    assert report.is_file() and report.parent.name == "scheduled__day1"
    page = report.read_text()
    assert "Classification quality" in page and "x3" in page
    client = MlflowClient()
    champion_run = client.get_model_version_by_alias(spec.model_name, "champion").run_id
    logged = [a.path for a in client.list_artifacts(champion_run, "monitoring/scheduled__day1")]
    assert logged == ["monitoring/scheduled__day1/report.html"]

    runs = monitoring_runs(spec, "scheduled__day1")
    assert [r.info.run_id for r in runs] == [res["mlflow_run_id"]]
    assert runs[0].data.tags["airloop.model_version"] == res["model_version"]
    assert runs[0].data.metrics["drift_share"] == pytest.approx(res["drift_share"])
    assert runs[0].data.metrics["performance"] == pytest.approx(perf["roc_auc"])

    prom = samples((report.parent.parent / "metrics.prom").read_text())
    labels = {"tenant": spec.tenant, "project": "montest"}
    assert prom[sample_key("airloop_drift_share", labels)] == 0
    assert prom[sample_key("airloop_retrain_decision", labels)] == 0
    assert prom[sample_key("airloop_model_performance", {**labels, "metric": "roc_auc"})] == \
        pytest.approx(perf["roc_auc"])


def test_shift_flags_columns_then_cooldown_and_idempotent_rerun(project, trained):
    spec, settings = project()
    send(spec, settings, trained[1], make_frame(400, seed=11, shift={"x1": 1.0, "x3": 1.0}))
    first = monitor(spec, settings, "run-a")
    assert {"x1", "x3"} <= set(first["drifted_columns"])
    assert first["drift"] is True and first["drift_share"] >= 0.3
    assert first["prediction_drift"] is True  # x1 drives the score
    # The score is tested on its own, beside the dataset verdict over the features.
    assert first["columns"]["score"]["drifted"] is True and "score" not in first["drifted_columns"]
    assert first["retrain"] is True

    second = monitor(spec, settings, "run-b")
    assert second["drift"] is True
    assert second["retrain"] is False and second["reason"].startswith("cool-down")

    again = monitor(spec, settings, "run-a")  # an Airflow retry of the first try
    assert again["retrain"] is True and again["reason"] == first["reason"]
    assert len(monitoring_runs(spec, "run-a")) == 1
    assert again["mlflow_run_id"] == first["mlflow_run_id"]


def test_max_retrains_per_day(project, trained):
    spec, settings = project(cooldown_hours=0, max_retrains_per_day=2)
    send(spec, settings, trained[1], make_frame(300, seed=12, shift={"x2": 1.0, "x4": 1.0}),
         labels=False)
    decisions = [monitor(spec, settings, f"r{i}") for i in range(3)]
    assert [d["retrain"] for d in decisions] == [True, True, False]
    assert decisions[2]["reason"].startswith("max retrains per day (2)")
    assert decisions[0]["labelled_rows"] == 0 and decisions[0]["performance"]["value"] is None


def test_degraded_performance_alone_asks_for_retrain(project, trained):
    spec, settings = project()
    send(spec, settings, trained[1], make_frame(400, seed=13), labels="inverted")
    res = monitor(spec, settings, "bad-labels")
    assert res["drift"] is False
    assert res["degraded"] is True and res["performance"]["drop"] >= 0.05
    assert res["retrain"] is True and "roc_auc" in res["reason"]


def test_too_few_rows_gives_no_verdict(project, trained):
    spec, settings = project()
    send(spec, settings, trained[1], make_frame(40, seed=14, shift={"x1": 3.0}))
    res = monitor(spec, settings, "quiet")
    assert res["rows"] == 40 and res["verdict"] is False
    assert res["retrain"] is False and res["drift"] is False and res["report"] is None
    assert res["reason"].startswith("no verdict: 40 logged predictions")


def test_no_champion_is_one_clear_error(mlflow_server):
    from airloop.core import settings as config
    from airloop.runtime.steps import monitor as step

    spec = spec_for(f"t{uuid.uuid4().hex[:8]}")
    with pytest.raises(AirloopError, match="no 'champion' alias"):
        step.run(spec, run_id="x", settings=config.load())


# -- pure functions -------------------------------------------------------------------


def numeric_days(rows: int, seed: int, shift: dict[int, float] | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    draws = [
        lambda: rng.normal(0, 1, rows), lambda: rng.lognormal(0, 0.5, rows),
        lambda: rng.gamma(2.0, 2.0, rows), lambda: rng.uniform(0, 10, rows),
    ]
    data = {}
    for j in range(20):
        x = draws[j % 4]()
        if shift and j in shift:
            x = x + shift[j] * x.std()
        data[f"f{j:02d}"] = x
    return pd.DataFrame(data)


def test_thirty_stationary_days_flag_nothing_and_injected_columns_are_found():
    base = numeric_days(20_000, seed=100)
    for day in range(30):
        share, cols = drift.drift_share(base, numeric_days(2_000, seed=1000 + day))
        assert share < 0.3 and cols == [], f"day {day}: {cols}"
    shift = {1: 0.5, 6: 0.5, 11: 0.5, 16: 0.5}
    share, cols = drift.drift_share(base, numeric_days(2_000, seed=5000, shift=shift))
    assert sorted(cols) == ["f01", "f06", "f11", "f16"] and share == pytest.approx(0.2)


def test_small_samples_use_evidently_small_sample_tests():
    ref, cur = make_frame(500, seed=1), make_frame(500, seed=2, shift={"x1": 1.0})
    result = drift.compute_drift(ref, cur, FEATURES, categorical=["plan"])
    assert result.methods() == {"x1": "ks", "x2": "ks", "x3": "ks", "x4": "ks",
                                "plan": "chisquare"}
    assert "x1" in result.drifted_columns


def test_guard_rails_are_rolling_and_idempotent(tmp_path):
    state = tmp_path / "state.json"
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def decide(rid, hours, wanted=True):
        return guardrails.decide_retrain(state, rid, wanted=wanted, why="drift",
                                         cooldown_hours=6, max_per_day=2,
                                         now=t0 + timedelta(hours=hours))

    assert decide("a", 0).retrain is True
    assert decide("b", 5).reason.startswith("cool-down")
    assert decide("a", 5).retrain is True  # recorded decision, not re-evaluated
    assert decide("c", 7).retrain is True
    assert decide("d", 14).reason.startswith("max retrains per day (2)")
    assert decide("e", 25).retrain is True  # "a" left the 24 h window
    assert decide("f", 40, wanted=False).reason == "drift"
    state.write_text("{not json")
    assert decide("g", 41).retrain is True
    assert list(tmp_path.glob("state.json.corrupt-*"))


def test_prediction_drift_is_the_score_column_on_the_drift_samples():
    ref, cur = make_frame(3000, seed=1), make_frame(25_000, seed=2, shift={"x1": 0.3})
    ref["score"], cur["score"] = ref.x1, cur.x1
    features = drift.compute_drift(ref, cur, FEATURES, categorical=["plan"])
    score = drift.prediction_drift(ref, cur, "score")
    x1 = next(c for c in features.columns if c.column == "x1")
    assert (score.method, score.score, score.drifted) == (x1.method, x1.score, x1.drifted)
    assert score.column == "score" and score.method == "wasserstein" and score.drifted
    with pytest.raises(AirloopError, match=r"\['score'\] missing"):
        drift.prediction_drift(ref[FEATURES], cur, "score")


def test_report_agrees_with_the_verdict_and_shows_prediction_drift():
    """x1 drives the score: 1 of 5 features and the score drift. The verdict (share 0.2)
    is over the features only, and so is the report's drifted-columns share."""
    from airloop.runtime.evaluation import report

    ref, cur = make_frame(3000, seed=3), make_frame(800, seed=4, shift={"x1": 0.5})
    for frame in (ref, cur):
        frame["score"] = 1 / (1 + np.exp(-frame.x1))
    verdict = drift.compute_drift(ref, cur, FEATURES, categorical=["plan"])
    score = drift.prediction_drift(ref, cur, "score")
    assert verdict.drifted_columns == ["x1"] and not verdict.dataset_drift and score.drifted

    snap = report.drift_snapshot(ref, cur, verdict, score, features=FEATURES,
                                 categorical=["plan"]).dict()
    values = {m["config"]["type"].rsplit(":", 1)[-1]
              + (f":{m['config']['column']}" if "column" in m["config"] else ""): m["value"]
              for m in snap["metrics"]}
    assert values["DriftedColumnsCount"] == {"count": 1.0, "share": pytest.approx(verdict.share)}
    for col in (*verdict.columns, score):
        assert values[f"ValueDrift:{col.column}"] == pytest.approx(col.score), col.column
    failed = {t["name"] for t in snap["tests"] if t["status"] == "FAIL"}
    assert not any(name.startswith("Share of Drifted Columns") for name in failed)
    assert {"Value Drift for column x1", "Value Drift for column score"} <= failed


def render(**result) -> str:
    """The exposition of a monitor result (defaults: a window without a verdict)."""
    from airloop.runtime.evaluation import exposition

    base = {"rows": 400, "labelled_rows": 0, "verdict": False, "drift": False,
            "drift_share": None, "drifted_columns": [], "prediction_drift": False,
            "performance": {}, "degraded": False, "retrain": False}
    verdict = drift.DriftResult(
        (drift.ColumnDrift("x1", "ks", 0.01, 0.05, True),
         drift.ColumnDrift("x2", "none", float("nan"), float("nan"), False)),
        0.5, 0.3, 2000, 400,
    )
    return exposition.render(
        {**base, **result}, tenant="t1", project="p1", drift=verdict if result else None,
        now=datetime(2026, 1, 1, tzinfo=UTC),
    ).decode()


def exposition_of(**result) -> dict[tuple, float]:
    return samples(render(**result))


def test_exposition_names_labels_and_values():
    labels = {"tenant": "t1", "project": "p1"}
    quiet = exposition_of()
    assert quiet == {
        sample_key("airloop_monitor_last_run_timestamp_seconds", labels):
            datetime(2026, 1, 1, tzinfo=UTC).timestamp(),
        sample_key("airloop_monitor_rows", labels): 400,
        sample_key("airloop_monitor_labelled_rows", labels): 0,
        sample_key("airloop_monitor_verdict", labels): 0,
        sample_key("airloop_model_degraded", labels): 0,
        sample_key("airloop_retrain_decision", labels): 0,
    }
    perf = {"metric": "roc_auc", "value": 0.7, "roc_auc": 0.7, "accuracy": 0.6,
            "baseline": 0.8, "drop": 0.1, "degraded": True}
    busy = exposition_of(verdict=True, drift=True, drift_share=0.5, drifted_columns=["x1"],
                         prediction_drift=True, performance=perf, degraded=True, retrain=True)
    assert busy == {
        **quiet,
        sample_key("airloop_monitor_verdict", labels): 1,
        sample_key("airloop_drift_share", labels): 0.5,
        sample_key("airloop_drifted_columns", labels): 1,
        sample_key("airloop_dataset_drift", labels): 1,
        sample_key("airloop_prediction_drift", labels): 1,
        # the untested column (NaN score) is left out
        sample_key("airloop_column_drift_score", {**labels, "column": "x1", "method": "ks"}): 0.01,
        sample_key("airloop_model_performance", {**labels, "metric": "roc_auc"}): 0.7,
        sample_key("airloop_model_performance", {**labels, "metric": "accuracy"}): 0.6,
        sample_key("airloop_model_holdout_metric", {**labels, "metric": "roc_auc"}): 0.8,
        sample_key("airloop_model_degraded", labels): 1,
        sample_key("airloop_retrain_decision", labels): 1,
    }


def test_exposition_ignores_prometheus_multiprocess_mode(monkeypatch, tmp_path):
    """Importing feast sets ``PROMETHEUS_MULTIPROC_DIR``; a ``prometheus_client`` imported
    after it keeps ``Gauge`` values in mmap files there. This is that state, with the
    folder gone: the monitor's metrics render the same."""
    from prometheus_client import values

    before = render(verdict=True, drift_share=0.0)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "gone"))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    assert render(verdict=True, drift_share=0.0) == before
    assert 'airloop_drift_share{project="p1",tenant="t1"} 0.0\n' in before
