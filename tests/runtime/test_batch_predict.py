"""batch_predict against a real MLflow server: champion → one row per entity, idempotent."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airloop.core.errors import AirloopError

FEATURES = ["x1", "x2", "plan"]


def spec_for(tenant: str):
    from airloop.core.spec import parse_spec

    raw = {
        "name": "batchtest",
        "tenant": tenant,
        "data": {
            "entity": {"name": "customer", "join_key": "customer_id"},
            "timestamp": "event_timestamp",
            "label": "churned",
            "columns": [
                {"name": "x1", "dtype": "float64"},
                {"name": "x2", "dtype": "float64"},
                {"name": "plan", "dtype": "string", "allowed": ["a", "b"]},
            ],
        },
        "features": {"views": [{"name": "v", "features": FEATURES}]},
        "model": {"family": "airloop.runtime.models:Logistic",
                  "search_space": {"c": {"type": "loguniform", "low": 0.01, "high": 1.0}}},
        "metric": {"name": "roc_auc"},
    }
    return parse_spec(raw, Path(f"/virtual/{tenant}/batchtest.yaml"))


def dataset(entities: int, per_entity: int, seed: int = 0) -> pd.DataFrame:
    """Several feature rows per entity at increasing event times (the offline source)."""
    rng = np.random.default_rng(seed)
    n = entities * per_entity
    start = datetime(2026, 1, 1, tzinfo=UTC)
    frame = pd.DataFrame({
        "customer_id": np.tile(np.arange(1, entities + 1), per_entity).astype("int64"),
        "event_timestamp": [start + timedelta(days=i // entities) for i in range(n)],
        "x1": rng.normal(0, 1, n),
        "x2": rng.uniform(0, 5, n),
        "plan": rng.choice(["a", "b"], n),
    })
    frame["churned"] = (frame.x1 + rng.normal(0, 0.5, n) > 0).astype("int64")
    return frame.sample(frac=1.0, random_state=seed)  # stored order is not time order


@pytest.fixture(scope="module")
def champion(mlflow_server):
    """A tenant whose champion is a tiny sklearn model logged like the train step does."""
    import mlflow
    from mlflow import MlflowClient
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from airloop.core import settings as config

    spec = spec_for(f"b{uuid.uuid4().hex[:8]}")
    mlflow.set_tracking_uri(mlflow_server)
    train = dataset(200, 2, seed=1)
    model = make_pipeline(
        ColumnTransformer([("plan", OneHotEncoder(), ["plan"])], remainder="passthrough"),
        LogisticRegression(),
    ).fit(train[FEATURES], train.churned)
    mlflow.set_experiment(f"batchtest-{uuid.uuid4().hex[:6]}")
    with mlflow.start_run(tags={"airloop.dag_run_id": "train-1"}):
        info = mlflow.sklearn.log_model(model, name="model", pyfunc_predict_fn="predict_proba",
                                        pip_requirements=["scikit-learn", "pandas"])
    client = MlflowClient()
    mv = mlflow.register_model(info.model_uri, spec.model_name)
    client.set_registered_model_alias(spec.model_name, "champion", mv.version)
    return spec, config.load(), model, mv.version


def test_one_row_per_entity_from_latest_features_and_idempotent(champion):
    from airloop.core.layout import layout
    from airloop.runtime.steps import batch_predict

    spec, settings, model, version = champion
    paths = layout(spec, settings)
    data = dataset(30, 3, seed=2)
    paths.dataset.mkdir(parents=True, exist_ok=True)
    data.to_parquet(paths.dataset_file, index=False)

    res = batch_predict.run(spec, run_id="scheduled__2026-01-04T03:00:00+00:00",
                            settings=settings, input=str(paths.dataset_file))
    out = pd.read_parquet(res["path"])
    assert res["rows"] == 30 and len(out) == 30 and res["model_version"] == str(version)
    assert Path(res["path"]).name == "scheduled__2026-01-04T03_00_00_00_00.parquet"
    assert out.customer_id.is_unique
    assert set(out.columns) == {"customer_id", "event_timestamp", "score", "prediction",
                                "model_version", "run_id"}

    latest = data.sort_values("event_timestamp").groupby("customer_id").tail(1)
    latest = latest.set_index("customer_id").loc[out.customer_id]
    assert (pd.to_datetime(out.event_timestamp, utc=True).to_numpy()
            == pd.to_datetime(latest.event_timestamp, utc=True).to_numpy()).all()
    expected = model.predict_proba(latest[FEATURES])[:, 1]
    np.testing.assert_allclose(out.score, expected, rtol=1e-9)
    assert (out.prediction == (expected >= 0.5)).all()
    assert (out.model_version == str(version)).all()

    again = batch_predict.run(spec, run_id="scheduled__2026-01-04T03:00:00+00:00",
                              settings=settings, input=str(paths.dataset_file))
    assert again["path"] == res["path"]
    assert sorted(p.name for p in paths.batch.iterdir()) == [Path(res["path"]).name]
    pd.testing.assert_frame_equal(pd.read_parquet(again["path"]), out)


def test_no_champion_and_bad_input_are_clear_errors(champion, mlflow_server, tmp_path):
    from airloop.core import settings as config
    from airloop.runtime.steps import batch_predict

    lonely = spec_for(f"n{uuid.uuid4().hex[:8]}")
    with pytest.raises(AirloopError, match="no 'champion' alias"):
        batch_predict.run(lonely, run_id="x", settings=config.load(), input="unused.parquet")

    spec, settings, _, _ = champion
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"customer_id": [1], "x1": [0.1]}).to_parquet(bad)
    with pytest.raises(AirloopError, match=r"lacks column\(s\) \['x2', 'plan'\]"):
        batch_predict.run(spec, run_id="x", settings=settings, input=str(bad))
    with pytest.raises(AirloopError, match="cannot read --input"):
        batch_predict.run(spec, run_id="x", settings=settings, input=str(tmp_path / "nope.pq"))
