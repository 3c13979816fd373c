"""Feast feature repo from the spec on real stores (DuckDB offline, SQLite and Redis online).

Data comes the way it does in the demo: ``airloop generate`` writes landing files, the
ingest step validates and stores them, then materialize and the reads are checked
against the dataset. Each module run uses its own home and a unique tenant, so the
Feast project (and its Redis keys) never collides with parallel runs.
"""

from __future__ import annotations

import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from airloop.cli import main as cli_main
from airloop.core.layout import layout

START = date(2026, 10, 1)
REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def mp():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _project(tmp_path_factory, mp, label: str):
    """A private home and projects dir holding the churn spec under a unique tenant."""
    from helpers import churn_project

    return churn_project(tmp_path_factory.mktemp(f"features-{label}"), mp)


def _ingest(spec, settings, days=3, rows=300):
    from airloop.runtime.steps import ingest

    argv = ["generate", "--project", "churn", "--days", str(days), "--rows-per-day",
            str(rows), "--start-date", START.isoformat()]
    assert cli_main(argv) == 0
    out = ingest.run(spec, run_id="ingest-1", settings=settings)
    assert out["files"] == days and out["rows_added"] == days * rows
    return pd.read_parquet(layout(spec, settings).dataset_file)


@pytest.fixture(scope="module")
def project(airloop_home, tmp_path_factory, mp):
    mp.delenv("AIRLOOP_FEAST_ONLINE", raising=False)
    spec, settings = _project(tmp_path_factory, mp, "sqlite")
    data = _ingest(spec, settings)
    return spec, settings, data


@pytest.fixture(scope="module")
def materialized(project):
    """The project after its first materialization: ``(spec, settings, data, result)``.
    One fixture, so that no test depends on another having materialized first."""
    from airloop.runtime.steps import materialize

    spec, settings, data = project
    return spec, settings, data, materialize.run(spec, run_id="m-1", settings=settings)


def _latest(spec, data):
    return data.sort_values(spec.timestamp).groupby(spec.entity_key).tail(1).set_index(
        spec.entity_key
    )


def test_repo_objects_follow_the_spec(project):
    from airloop.runtime.features.store import repo_objects

    spec, settings, _ = project
    entity, *views, service = repo_objects(spec, settings)
    assert entity.join_key == "customer_id" and entity.owner == spec.contact
    assert [v.name for v in views] == ["customer_profile", "customer_activity"]
    dtypes = {c.name: c.dtype for c in spec.columns}
    for view in views:
        assert view.ttl == timedelta(days=spec.features.ttl_days)
        assert view.owner == spec.contact and view.tags["tenant"] == spec.tenant
        assert view.tags["owner"] == spec.contact == service.tags["owner"]
        assert view.batch_source.path == str(layout(spec, settings).dataset_file)
        for field in view.schema:
            assert str(field.dtype).lower().startswith(
                {"int64": "int64", "float64": "float64", "string": "string"}[dtypes[field.name]]
            ), field.name
    assert service.name == "churn_v1"
    assert [p.name for p in service.feature_view_projections] == [v.name for v in views]


def test_materialize_writes_the_window_once(materialized):
    from airloop.runtime.steps import materialize

    spec, settings, data, first = materialized
    assert first["views"] == ["customer_profile", "customer_activity"]
    assert first["online"] == "sqlite" and layout(spec, settings).online_store.is_file()
    assert datetime.fromisoformat(first["window"]["start"]) < data[spec.timestamp].min()
    assert first["rows"] == len(data)
    assert first["entities"] == data[spec.entity_key].nunique()
    # Idempotent: the next run starts where this one ended and finds nothing new.
    again = materialize.run(spec, run_id="m-2", settings=settings)
    assert again["window"]["start"] == first["window"]["end"]
    assert again["rows"] == 0 and again["entities"] == 0


def test_online_features_are_each_entitys_latest_values(materialized):
    from airloop.runtime.features import store

    spec, settings, data, _ = materialized
    latest = _latest(spec, data)
    # Prefer customers seen more than once: their online value must be the newest one.
    repeat = data[spec.entity_key].value_counts()
    ids = [int(i) for i in repeat[repeat > 1].index[:8]]
    assert ids, "the sample has no repeated customers; the test would prove nothing"
    online = store.online_features(spec, settings, [*ids, 10**9]).set_index(spec.entity_key)
    for entity_id in ids:
        for feature in spec.feature_columns:
            expected = latest.loc[entity_id, feature]
            got = online.loc[entity_id, feature]
            assert got == (pytest.approx(expected) if isinstance(expected, float) else expected)
    assert online.loc[10**9, spec.feature_columns].isna().all()


def test_training_frame_is_complete_and_point_in_time(project):
    from airloop.runtime.features import store

    spec, settings, data = project
    frame = store.training_frame(spec, settings)
    assert len(frame) == len(data)
    assert list(frame.columns) == [spec.entity_key, spec.timestamp, *spec.feature_columns,
                                   spec.label]
    assert frame[spec.timestamp].is_monotonic_increasing
    # Every row carries the values of its own (entity, time), never a later snapshot of
    # the same customer; customers seen on several days make this check able to fail.
    keys = [spec.entity_key, spec.timestamp]
    joined = frame.merge(data, on=keys, suffixes=("", "_data"), validate="one_to_one")
    assert len(joined) == len(data)
    repeated = data.groupby(spec.entity_key)["monthly_charges"].nunique()
    assert (repeated > 1).sum() > 10
    for feature in [*spec.feature_columns, spec.label]:
        left, right = joined[feature], joined[f"{feature}_data"]
        if pd.api.types.is_float_dtype(right):
            assert (left - right).abs().max() < 1e-9, feature
        else:
            assert (left.astype(str) == right.astype(str)).all(), feature


def test_latest_offline_features_one_row_per_entity(project):
    from airloop.runtime.features import store

    spec, settings, data = project
    frame = store.latest_offline_features(spec, settings).set_index(spec.entity_key)
    latest = _latest(spec, data)
    assert frame.index.is_unique and set(frame.index) == set(latest.index)
    sample = latest.index[:20]
    drift = frame.loc[sample, "monthly_charges"] - latest.loc[sample, "monthly_charges"]
    assert drift.abs().max() < 1e-9
    assert (frame.loc[sample, "contract_type"] == latest.loc[sample, "contract_type"]).all()


def test_redis_online_store(project, tmp_path_factory):
    """The production online store: same repo objects, materialized into real Redis."""
    from airloop.runtime.features import store

    data = project[2]
    with pytest.MonkeyPatch.context() as mp:
        spec, settings = _project(tmp_path_factory, mp, "redis")
        settings = settings.model_copy(update={"feast_online": REDIS})
        # The ingested dataset of the SQLite project, as this project's offline source.
        layout(spec, settings).dataset.mkdir(parents=True)
        data.to_parquet(layout(spec, settings).dataset_file, index=False)
        fs = None
        try:
            out = store.materialize(spec, settings)
            fs = store.feature_store(spec, settings)
            assert out["online"] == "redis"
            assert out["entities"] == data[spec.entity_key].nunique()
            assert not layout(spec, settings).online_store.exists()
            latest = _latest(spec, data)
            ids = [int(i) for i in latest.index[:5]]
            online = store.online_features(spec, settings, ids).set_index(spec.entity_key)
            for entity_id in ids:
                assert online.loc[entity_id, "monthly_charges"] == pytest.approx(
                    latest.loc[entity_id, "monthly_charges"])
                assert online.loc[entity_id, "payment_method"] == latest.loc[
                    entity_id, "payment_method"]
        finally:
            if fs is not None:  # remove this test's keys from the shared Redis
                fs.teardown()


def test_bad_online_setting_is_one_clear_error():
    from airloop.core.errors import AirloopError
    from airloop.core.settings import load

    with pytest.raises(AirloopError, match="AIRLOOP_FEAST_ONLINE='memcached://x'"):
        load({"AIRLOOP_FEAST_ONLINE": "memcached://x"})


def test_training_frame_without_dataset_says_ingest_first(airloop_home, tmp_path_factory):
    from airloop.core.errors import AirloopError
    from airloop.runtime.features import store

    with pytest.MonkeyPatch.context() as mp:
        spec, settings = _project(tmp_path_factory, mp, "empty")
        with pytest.raises(AirloopError, match="ingest"):
            store.training_frame(spec, settings)


def test_model_server_reader_sees_what_materialize_wrote(materialized):
    """The model server reads Feast's SQLite tables itself (no Feast next to MLServer):
    with the settings the deploy step hands it, it must return the SDK's values."""
    from airloop.runtime.features import store
    from airloop.serving.online import OnlineReader
    from airloop.runtime.steps.deploy import runtime_extra

    spec, settings, data, _ = materialized
    extra = runtime_extra(spec, settings, "1")
    assert extra["online_store"] == store.online_location(spec, settings)
    latest = _latest(spec, data)
    ids = [int(i) for i in latest.index[:10]]
    sdk = store.online_features(spec, settings, ids).set_index(spec.entity_key)
    with OnlineReader(extra["online_store"], extra["feast_project"], extra["views"],
                      extra["join_key"], extra["entity_dtype"]) as reader:
        rows = reader.get([*ids, 10**9])
    assert rows[-1] is None
    for entity_id, row in zip(ids, rows, strict=False):
        assert row is not None, entity_id
        for feature in spec.feature_columns:
            expected = latest.loc[entity_id, feature]
            if isinstance(expected, float):
                assert row[feature] == pytest.approx(expected)
                assert sdk.loc[entity_id, feature] == pytest.approx(expected)
            else:
                assert row[feature] == expected == sdk.loc[entity_id, feature], feature


def test_training_rows_never_see_their_entitys_future(airloop_home, tmp_path_factory):
    """One customer seen at 08:00 and 13:00 with different values: the 08:00 training
    row must carry the 08:00 values although a newer snapshot exists."""
    from airloop.runtime.features import store
    from airloop.runtime.steps import ingest

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AIRLOOP_FEAST_ONLINE", raising=False)
        spec, settings = _project(tmp_path_factory, mp, "pit")
        from airloop.demo import churn

        base = churn.generate_day(spec, 0, start=START, rows=60)
        twice = base.iloc[:2].copy()
        t0 = pd.Timestamp(datetime(2026, 10, 1, 8), tz="UTC")
        twice[spec.entity_key] = 424242
        twice[spec.timestamp] = [t0, t0 + timedelta(hours=5)]
        twice["monthly_charges"] = [10.0, 99.0]
        twice["contract_type"] = ["month-to-month", "two-year"]
        paths = layout(spec, settings)
        paths.landing.mkdir(parents=True, exist_ok=True)
        pd.concat([base, twice]).to_csv(paths.landing / "day0.csv", index=False)
        out = ingest.run(spec, run_id="pit-1", settings=settings)
        assert out["rows_added"] == 62
        frame = store.training_frame(spec, settings)
        assert len(frame) == 62
        mine = frame[frame[spec.entity_key] == 424242].sort_values(spec.timestamp)
        assert mine["monthly_charges"].tolist() == [10.0, 99.0]
        assert mine["contract_type"].tolist() == ["month-to-month", "two-year"]
        latest = store.latest_offline_features(spec, settings).set_index(spec.entity_key)
        assert latest.loc[424242, "monthly_charges"] == 99.0


def test_late_rows_reach_the_online_store(airloop_home, tmp_path_factory):
    """Rows ingested after a materialization but stamped before its end (a backfilled
    day) must still be materialized; plain incremental materialization would skip them."""
    from airloop.demo import churn
    from airloop.runtime.features import store
    from airloop.runtime.steps import ingest, materialize

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AIRLOOP_FEAST_ONLINE", raising=False)
        spec, settings = _project(tmp_path_factory, mp, "late")
        paths = layout(spec, settings)
        paths.landing.mkdir(parents=True, exist_ok=True)
        first = churn.generate_day(spec, 5, start=START, rows=60)
        first.to_csv(paths.landing / "day5.csv", index=False)
        ingest.run(spec, run_id="late-1", settings=settings)
        materialize.run(spec, run_id="late-m1", settings=settings)

        # Backfill: day 2 (long before the last materialization), a newcomer and a
        # newer snapshot of a known customer, both stamped in the past.
        known = int(first[spec.entity_key].iloc[0])
        late = churn.generate_day(spec, 2, start=START, rows=60).iloc[:2].copy()
        late[spec.entity_key] = [777777, known]
        newest = first.loc[first[spec.entity_key] == known, spec.timestamp].max()
        late[spec.timestamp] = [newest - timedelta(days=3), newest + timedelta(hours=1)]
        late["monthly_charges"] = [123.25, 321.5]
        late = pd.concat([churn.generate_day(spec, 2, start=START, rows=60), late])
        late.to_csv(paths.landing / "day2.csv", index=False)
        ingest.run(spec, run_id="late-2", settings=settings)
        out = materialize.run(spec, run_id="late-m2", settings=settings)
        assert datetime.fromisoformat(out["window"]["start"]) <= newest - timedelta(days=3)
        online = store.online_features(spec, settings, [777777, known]).set_index(
            spec.entity_key)
        assert online.loc[777777, "monthly_charges"] == pytest.approx(123.25)
        assert online.loc[known, "monthly_charges"] == pytest.approx(321.5)
        # Nothing new: the next run starts at the last end again.
        again = materialize.run(spec, run_id="late-m3", settings=settings)
        assert again["window"]["start"] == out["window"]["end"] and again["rows"] == 0


@pytest.mark.parametrize("values", [
    {}, {"feast": {"redis": {"enabled": False, "externalUrl": "redis.example:6380"}}},
])
def test_steps_and_feature_server_use_the_same_redis(values):
    """The chart's tenant env (AIRLOOP_FEAST_ONLINE) is what the runtime's feature store
    accepts, and names the Redis of the feature server's feature_store.yaml. (Here, not
    in the control tier: it needs the runtime's Feast code; the chart is rendered with
    the same helper the chart tests use.)"""
    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "control"))
    from chart_utils import render_chart

    from airloop.core.settings import load as load_settings
    from airloop.runtime.features import store

    objs = render_chart(values)

    def data(name: str) -> dict:
        return next(o["data"] for o in objs
                    if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name)

    feast_yaml = yaml.safe_load(data("airloop-feast")["feature_store.yaml"])
    server_conn = feast_yaml["online_store"]["connection_string"]
    url = data("airloop-runtime-env")["AIRLOOP_FEAST_ONLINE"]
    assert url == f"redis://{server_conn}/0"
    settings = load_settings({"AIRLOOP_FEAST_ONLINE": url})
    assert store._online_config(None, settings) == {
        "type": "redis", "connection_string": f"{server_conn},db=0"}
