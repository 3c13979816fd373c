"""The deploy step tells the model server where the online store is.

``runtime_extra`` (``parameters.extra`` of the model settings) must carry the location
that :class:`airloop.serving.online.OnlineReader` needs for the configured Feast online
store: the ``redis://`` URL when ``AIRLOOP_FEAST_ONLINE`` selects Redis (production
profile), the SQLite file otherwise (local default). Checked for real: Feast writes a
row into the machine's Redis (127.0.0.1:6379) under a Feast project of its own, and the
reader built from the extra reads it back; the project's keys are removed afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from airloop.core.layout import layout

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def project(airloop_home, tmp_path, monkeypatch):
    """The churn spec under a unique tenant (so a unique Feast project and Redis keys)."""
    from helpers import churn_project

    monkeypatch.delenv("AIRLOOP_FEAST_ONLINE", raising=False)
    return churn_project(tmp_path, monkeypatch, tenant_prefix="x")


def _project_keys(project: str) -> list[bytes]:
    import redis

    client = redis.Redis.from_url(REDIS)
    try:
        return list(client.scan_iter(match=b"*" + project.encode(), count=500))
    finally:
        client.close()


def test_local_default_is_the_sqlite_file(project):
    from airloop.runtime.steps.deploy import runtime_extra

    spec, settings = project
    extra = runtime_extra(spec, settings, "3")
    assert extra["online_store"] == str(layout(spec, settings).online_store)
    assert extra["online_store"].endswith("online.db")


def test_redis_online_store_location_reaches_the_reader(project):
    from airloop.runtime.features import store
    from airloop.serving.online import OnlineReader
    from airloop.runtime.steps.deploy import runtime_extra

    spec, settings = project
    settings = settings.model_copy(update={"feast_online": REDIS})
    extra = runtime_extra(spec, settings, "3")
    assert extra["online_store"] == REDIS
    assert extra["feast_project"] == spec.feast_project
    assert not _project_keys(spec.feast_project), "the Feast project must start empty"

    fs = store.feature_store(spec, settings)
    try:
        fs.apply(store.repo_objects(spec, settings))
        entity, now = 4242, datetime.now(UTC).replace(microsecond=0)
        rows = {
            "customer_profile": {"tenure_months": 17, "age": 41, "contract_type": "one-year",
                                 "payment_method": "bank", "num_devices": 3},
            "customer_activity": {"monthly_charges": 61.25, "total_charges": 1041.25,
                                  "data_usage_gb": 12.5, "support_calls_30d": 2,
                                  "late_payments_90d": 0, "dropped_calls_rate": 0.02,
                                  "satisfaction_score": 7.5},
        }
        for view, values in rows.items():
            frame = pd.DataFrame([{spec.entity_key: entity, spec.timestamp: now, **values}])
            fs.write_to_online_store(view, frame)
        assert _project_keys(spec.feast_project), "Feast wrote nothing to Redis"

        with OnlineReader(extra["online_store"], extra["feast_project"], extra["views"],
                          extra["join_key"], extra["entity_dtype"]) as reader:
            found, missing = reader.get([entity, entity + 1])
            assert reader.sample_entities(5) == [entity]
        assert missing is None
        expected = {k: v for values in rows.values() for k, v in values.items()}
        assert set(found) == set(spec.feature_columns)
        for feature, value in expected.items():
            if isinstance(value, float):
                assert found[feature] == pytest.approx(value), feature
            else:
                assert found[feature] == value, feature
        # nothing was read from (or written to) the local SQLite path
        assert not layout(spec, settings).online_store.exists()
    finally:
        fs.teardown()  # remove this project's keys from the shared Redis
    assert not _project_keys(spec.feast_project)
