"""Code tests of airloop.runtime.models: families, iterative training, metrics, bad specs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from helpers import PROJECTS
from airloop.core.errors import SpecError
from airloop.runtime.models import (
    HistGradientBoosting,
    LogisticRegression,
    is_better,
    load_family,
    score,
)
from airloop.core.spec import load_spec, parse_spec


@pytest.fixture(scope="module")
def spec():
    return load_spec("churn", PROJECTS)


def _with_model(spec, **model):
    raw = spec.model_dump(mode="json")
    raw["model"].update(model)
    return parse_spec(raw, spec.path)


def _frame(spec, rows=600, seed=0):
    rng = np.random.default_rng(seed)
    cols = {c.name: c for c in spec.columns}
    data = {}
    for name in spec.feature_columns:
        col = cols[name]
        if col.dtype == "string":
            data[name] = rng.choice(list(col.allowed), rows)
        elif col.dtype == "int64":
            data[name] = rng.integers(int(col.min), int(min(col.max, col.min + 50)), rows)
        else:
            data[name] = rng.uniform(col.min, min(col.max, col.min + 10), rows)
    X = pd.DataFrame(data)
    z = 0.08 * (X["support_calls_30d"] - 25) + 2.0 * (X["contract_type"] == "month-to-month") - 1
    y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-z))).astype(int)
    return X, y


def test_demo_family_preprocesses_categoricals_natively(spec):
    family = load_family(spec)
    assert isinstance(family, HistGradientBoosting)
    assert family.categorical == ["contract_type", "payment_method"]
    assert "tenure_months" in family.numeric and "contract_type" not in family.numeric
    X, _ = _frame(spec)
    Xt = family.preprocessor().fit_transform(X)
    assert Xt.shape == (len(X), len(spec.feature_columns))
    assert family.estimator({}).categorical_features == [0, 1]


@pytest.mark.parametrize(
    "family_ref, params",
    [
        ("airloop.runtime.models:HistGradientBoosting", {"learning_rate": 0.2, "max_depth": 3}),
        ("airloop.runtime.models:LogisticRegression", {"alpha": 1e-3}),
    ],
)
def test_training_is_iterative_and_yields_a_pipeline(spec, family_ref, params):
    space = {k: {"type": "uniform", "low": 0.0001, "high": 0.5} for k in params}
    s = _with_model(spec, family=family_ref, search_space=space)
    family = load_family(s)
    X, y = _frame(s)
    trainer = family.trainer(params, X.iloc[:400], y[:400])
    trainer.step()
    first = trainer.predict_proba(X.iloc[400:])
    for _ in range(4):
        trainer.step()
    later = trainer.predict_proba(X.iloc[400:])
    assert trainer.iterations == 5
    assert not np.allclose(first, later), "a step must change the model"
    assert score("roc_auc", y[400:], later) > 0.7
    pipeline = trainer.pipeline()
    proba = pipeline.predict_proba(X.iloc[400:])
    assert proba.shape == (200, 2)
    np.testing.assert_allclose(proba[:, 1], later)
    # an unseen category does not break scoring
    odd = X.iloc[400:402].copy()
    odd["contract_type"] = "ten-year"
    assert pipeline.predict_proba(odd).shape == (2, 2)


def test_hist_gradient_boosting_grows_trees_per_step(spec):
    family = load_family(spec)
    X, y = _frame(spec)
    trainer = family.trainer({"max_depth": 3}, X, y)
    for _ in range(3):
        trainer.step()
    assert trainer.estimator.n_iter_ == 3 * HistGradientBoosting.trees_per_iteration


def test_fit_matches_stepwise_training(spec):
    s = _with_model(spec, family="airloop.runtime.models:LogisticRegression",
                    search_space={"alpha": {"type": "loguniform", "low": 1e-5, "high": 1e-1}})
    family = load_family(s)
    assert isinstance(family, LogisticRegression)
    X, y = _frame(s)
    a = family.fit({"alpha": 1e-3}, X, y, iterations=3).predict_proba(X)
    trainer = family.trainer({"alpha": 1e-3}, X, y)
    for _ in range(3):
        trainer.step()
    np.testing.assert_allclose(a[:, 1], trainer.predict_proba(X))


@pytest.mark.parametrize(
    "family_ref, needle",
    [
        ("airloop.runtime.models:NoSuchFamily", "has no 'NoSuchFamily'"),
        ("airloop.nonexistent_module:X", "cannot import module"),
        ("airloop.runtime.models", "module:Class"),
        ("airloop.runtime.models:score", "not an airloop.runtime.models.ModelFamily"),
    ],
)
def test_unknown_family_names_the_field(spec, family_ref, needle):
    raw = spec.model_dump(mode="json")
    raw["model"]["family"] = family_ref
    with pytest.raises(SpecError, match="model.family") as err:
        load_family(parse_spec(raw, spec.path))
    assert needle in str(err.value)


def test_search_space_key_the_estimator_lacks_names_the_key(spec):
    s = _with_model(spec, search_space={"n_neighbors": {"type": "randint", "low": 1, "high": 9}})
    with pytest.raises(SpecError, match=r"model\.search_space\.n_neighbors"):
        load_family(s)
    # the iteration count is the family's, not the search's
    s = _with_model(spec, search_space={"max_iter": {"type": "randint", "low": 1, "high": 9}})
    with pytest.raises(SpecError, match=r"model\.search_space\.max_iter"):
        load_family(s)


def test_metrics_and_modes():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.9])
    assert score("roc_auc", y, p) == pytest.approx(0.75)
    assert score("accuracy", y, p) == pytest.approx(0.5)
    assert score("f1", y, p) == pytest.approx(0.5)
    assert score("log_loss", y, p) == pytest.approx(
        -np.mean(np.log([0.9, 0.4, 0.4, 0.9]))
    )
    assert math.isnan(score("roc_auc", np.array([1, 1]), np.array([0.2, 0.3])))
    with pytest.raises(SpecError, match="metric.name"):
        score("mape", y, p)
    assert is_better(0.8, 0.7, "max") and not is_better(0.7, 0.8, "max")
    assert is_better(0.3, 0.4, "min") and not is_better(0.4, 0.3, "min")
    assert not is_better(0.75, 0.7, "max", margin=0.1)
    assert is_better(0.7, 0.7, "max", margin=0.0)
    assert is_better(0.5, float("nan"), "max") and not is_better(float("nan"), 0.5, "max")
