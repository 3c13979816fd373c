"""Ingest against real components: GX validation, quarantine, DVC add/push to a local remote.

The Feast side (materialize, online reads, training frames) is in test_features.py.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

import pandas as pd
import pytest
from airloop.core import settings as config
from airloop.core.errors import ValidationFailed
from airloop.core.layout import layout
from airloop.core.spec import load_spec
from airloop.demo import churn
from airloop.runtime import versioning
from airloop.runtime.steps import ingest

START = date(2026, 10, 1)


@pytest.fixture
def env(airloop_home, tmp_path):
    """A fresh home per test: each test builds the state it needs (any order, alone)."""
    settings = config.load(home=tmp_path / "home", feast_online=None)
    spec = load_spec("churn", settings.projects_dir)
    return spec, settings, layout(spec, settings)


def _two_days_ingested(env) -> str:
    """Days 0 and 1 landed and ingested by run ``run-1``; returns the data version."""
    spec, settings, paths = env
    _land(paths, spec, 0)
    _land(paths, spec, 1)
    out = ingest.run(spec, run_id="run-1", settings=settings)
    assert out["files"] == 2 and out["total_rows"] == 400
    return out["data_version"]


def _land(paths, spec, day, rows=200, name=None, frame=None):
    paths.landing.mkdir(parents=True, exist_ok=True)
    frame = frame if frame is not None else churn.generate_day(spec, day, start=START, rows=rows)
    path = paths.landing / (name or f"churn_{START + timedelta(days=day)}.csv")
    frame.to_csv(path, index=False)
    return path


def test_ingest_quarantines_bad_files_and_keeps_good_ones(env):
    spec, settings, paths = env
    _land(paths, spec, 0)
    _land(paths, spec, 1)
    _land(paths, spec, 0, name="bad.csv", frame=churn.corrupt_batch(spec, start=START))
    (paths.landing / "garbage.parquet").write_bytes(b"\x00not parquet")
    (paths.landing / ".half-written.csv.tmp").write_text("ignored")

    with pytest.raises(ValidationFailed) as err:
        ingest.run(spec, run_id="run-1", settings=settings)
    message = str(err.value)
    assert "bad.csv" in message and "garbage.parquet" in message and "\n" not in message
    assert "2 valid file(s) ingested" in message
    # The line names the missing column and the value checks that failed, not just counts.
    assert "table_columns_to_match_set(missing satisfaction_score; unexpected -)" in message
    assert "column_values_to_be_in_set(churned)" in message

    # Nothing dropped: bad files sit in quarantine with their reasons.
    report = json.loads((paths.quarantine / "bad.csv.errors.json").read_text())
    failed = {(f["expectation"], f["column"]) for f in report["failures"]}
    assert ("expect_column_values_to_be_between", "age") in failed
    assert ("expect_column_values_to_be_in_set", "contract_type") in failed
    assert ("expect_column_values_to_be_in_set", "churned") in failed
    assert ("expect_table_columns_to_match_set", None) in failed
    assert report["failures"][0]["missing"] == ["satisfaction_score"]  # table-level first
    ages = next(f for f in report["failures"] if f["column"] == "age")
    assert ages["unexpected_count"] == 5 and ages["unexpected_sample"][0] == "250"
    gone = [f for f in report["failures"] if f["column"] == "satisfaction_score"]
    assert gone and all(f["observed"] == "column missing from the file" for f in gone)
    assert (paths.quarantine / "garbage.parquet").exists()
    unreadable = json.loads((paths.quarantine / "garbage.parquet.errors.json").read_text())
    assert unreadable["failures"][0]["expectation"] == "expect_file_to_be_readable"
    # Good files: ingested, moved, versioned.
    assert sorted(p.name for p in paths.processed.iterdir()) == [
        "churn_2026-10-01.csv", "churn_2026-10-02.csv"]
    data = pd.read_parquet(paths.dataset_file)
    assert len(data) == 400
    assert str(data[spec.timestamp].dt.tz) == "UTC"
    version = versioning.current_version(spec, settings)
    assert version and len(version) == 32
    remote = settings.dvc_remote / spec.tenant / spec.name
    assert any(p.is_file() for p in remote.rglob("*")), "DVC pushed nothing to the remote"
    assert (paths.landing / ".half-written.csv.tmp").exists()


def test_reingest_is_idempotent_and_versions_change_with_data(env):
    spec, settings, paths = env
    before = _two_days_ingested(env)
    out = ingest.run(spec, run_id="run-2", settings=settings)
    assert out["files"] == 0 and out["rows_added"] == 0 and out["data_version"] == before
    # The same rows again (a producer re-sent a day) add nothing and keep the version.
    _land(paths, spec, 1, name="resent.csv")
    out = ingest.run(spec, run_id="run-3", settings=settings)
    assert out["files"] == 1 and out["rows_added"] == 0 and out["total_rows"] == 400
    assert out["data_version"] == before
    _land(paths, spec, 2)
    out = ingest.run(spec, run_id="run-4", settings=settings)
    assert out["rows_added"] == 200 and out["total_rows"] == 600
    assert out["data_version"] != before
    assert [h["run_id"] for h in versioning.history(spec, settings)] == ["run-1", "run-4"]


def test_unparseable_and_fractional_values_are_reported_not_coerced(env):
    """A bad timestamp or a fractional count must not become a null or a truncated int."""
    spec, settings, paths = env
    _two_days_ingested(env)
    before = len(pd.read_parquet(paths.dataset_file))
    frame = churn.generate_day(spec, 20, start=START, rows=80)
    frame[spec.timestamp] = frame[spec.timestamp].astype(str)
    frame.loc[3, spec.timestamp] = "yesterday-ish"
    frame["tenure_months"] = frame["tenure_months"].astype(float)
    frame.loc[5, "tenure_months"] = 12.5
    _land(paths, spec, 20, name="sloppy.csv", frame=frame)
    with pytest.raises(ValidationFailed, match=r"sloppy\.csv: \d+ failed expectation"):
        ingest.run(spec, run_id="run-6", settings=settings)
    report = json.loads((paths.quarantine / "sloppy.csv.errors.json").read_text())
    by_kind = {(f["expectation"], f["column"]): f for f in report["failures"]}
    parse = by_kind[("expect_column_values_to_be_parseable", spec.timestamp)]
    assert parse["unexpected_sample"] == ["yesterday-ish"]
    ints = by_kind[("expect_column_values_to_be_integers", "tenure_months")]
    assert ints["unexpected_sample"] == ["12.5"] and ints["unexpected_count"] == 1
    assert len(pd.read_parquet(paths.dataset_file)) == before
