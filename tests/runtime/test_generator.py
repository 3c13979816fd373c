"""Data tests on the demo generator: schema, determinism, and that drift is real."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from helpers import PROJECTS
from airloop.demo import churn
from airloop.core.spec import load_spec

START = date(2026, 10, 1)


@pytest.fixture(scope="module")
def spec():
    return load_spec("churn", PROJECTS)


def _days(spec, days, drift_from=None, rows=600):
    return pd.concat(
        [churn.generate_day(spec, d, start=START, rows=rows, drift_from_day=drift_from)
         for d in days],
        ignore_index=True,
    )


def test_conforms_to_the_spec(spec):
    frame = churn.generate_day(spec, 0, start=START, rows=500)
    assert list(frame.columns) == [spec.entity_key, spec.timestamp,
                                   *[c.name for c in spec.columns], spec.label]
    assert str(frame[spec.timestamp].dt.tz) == "UTC"
    assert frame[spec.timestamp].dt.date.eq(START).all()
    for col in spec.columns:
        values = frame[col.name]
        assert values.notna().all(), col.name
        if col.min is not None:
            assert values.min() >= col.min and values.max() <= col.max, col.name
        if col.allowed:
            assert set(values) <= set(col.allowed), col.name
    assert set(frame[spec.label]) == {0, 1}


def test_deterministic_per_seed_and_day(spec):
    a = churn.generate_day(spec, 5, start=START, rows=200, seed=3)
    assert a.equals(churn.generate_day(spec, 5, start=START, rows=200, seed=3))
    assert not a.equals(churn.generate_day(spec, 6, start=START, rows=200, seed=3))
    assert not a.equals(churn.generate_day(spec, 5, start=START, rows=200, seed=4))


def test_drift_shifts_covariates_and_concept(spec):
    base = _days(spec, range(8))
    same = _days(spec, range(8, 10), drift_from=None)
    drifted = _days(spec, range(8, 10), drift_from=8)
    for column in ("monthly_charges", "satisfaction_score", "data_usage_gb"):
        assert ks_2samp(base[column], same[column]).pvalue > 0.001, column
        assert ks_2samp(base[column], drifted[column]).pvalue < 1e-6, column

    feats = spec.feature_columns

    def x(f):
        f = f[feats].copy()
        for c in ("contract_type", "payment_method"):
            f[c] = f[c].astype("category")
        return f

    model = HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=80,
                                           random_state=0).fit(x(base), base[spec.label])
    auc_same = roc_auc_score(same[spec.label], model.predict_proba(x(same))[:, 1])
    auc_drift = roc_auc_score(drifted[spec.label], model.predict_proba(x(drifted))[:, 1])
    assert auc_same > 0.75
    assert auc_same - auc_drift > 0.1  # the concept changed, not just the inputs
    # Labels follow other causes: wallet payers start leaving, satisfaction protects less.
    def wallet_gap(f):
        wallet = f["payment_method"] == "wallet"
        return f.loc[wallet, spec.label].mean() - f.loc[~wallet, spec.label].mean()

    def satisfaction_corr(f):
        return f["satisfaction_score"].corr(f[spec.label])

    assert wallet_gap(drifted) > wallet_gap(base) + 0.15
    assert satisfaction_corr(base) < -0.2 < satisfaction_corr(drifted)
    # A model retrained on drifted days recovers on later drifted days.
    fresh = _days(spec, range(10, 16), drift_from=8)
    retrained = HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=80,
                                               random_state=0).fit(x(fresh), fresh[spec.label])
    later = _days(spec, range(16, 18), drift_from=8)
    auc_old = roc_auc_score(later[spec.label], model.predict_proba(x(later))[:, 1])
    auc_new = roc_auc_score(later[spec.label], retrained.predict_proba(x(later))[:, 1])
    assert auc_new - auc_old > 0.05


def test_traffic_has_entity_and_features_only(spec):
    features, labels = churn.traffic(spec, 2, 50, start=START)
    assert list(features.columns) == [spec.entity_key, *spec.feature_columns]
    assert len(labels) == 50 and set(np.unique(labels)) <= {0, 1}


def test_corrupt_batch_breaks_expectations(spec):
    bad = churn.corrupt_batch(spec, start=START)
    assert "satisfaction_score" not in bad.columns
    assert (bad["age"] > 100).any() and (bad[spec.label] > 1).any()


def test_generate_cli_writes_dated_files_atomically(airloop_home, tmp_path, monkeypatch):
    from airloop.core import settings as config
    from airloop.cli import main
    from airloop.core.layout import layout

    monkeypatch.setenv("AIRLOOP_DATA_DIR", str(tmp_path / "data"))
    argv = ["generate", "--project", "churn", "--days", "2", "--rows-per-day", "80", "--corrupt"]
    assert main(argv) == 0
    spec = load_spec("churn", PROJECTS)
    landing = layout(spec, config.load()).landing
    yesterday = pd.Timestamp.now(tz="UTC").date() - pd.Timedelta(days=1)
    names = sorted(p.name for p in landing.iterdir())
    day0 = yesterday - pd.Timedelta(days=1)
    assert names == [f"churn_{day0}.csv", f"churn_{yesterday}.csv", f"churn_corrupt_{day0}.csv"]
    last = pd.read_csv(landing / f"churn_{yesterday}.csv")
    assert len(last) == 80
    assert pd.to_datetime(last[spec.timestamp], utc=True).dt.date.eq(yesterday).all()
    bad = pd.read_csv(landing / f"churn_corrupt_{day0}.csv")
    assert "satisfaction_score" not in bad.columns and (bad["age"] > 100).any()
    # The same day again, by explicit start date, as parquet: the same rows.
    again = ["generate", "--project", "churn", "--days", "1", "--start-day", "1",
             "--start-date", str(day0), "--rows-per-day", "80", "--format", "parquet"]
    assert main(again) == 0
    parquet = pd.read_parquet(landing / f"churn_{yesterday}.parquet")
    assert parquet.drop(columns=[spec.timestamp]).equals(last.drop(columns=[spec.timestamp]))
    assert not [p for p in landing.iterdir() if p.name.startswith(".")]  # no temp files left
