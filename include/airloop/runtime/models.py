"""Model families and metrics.

A project spec names its family by dotted path (``model.family``, e.g.
``airloop.runtime.models:HistGradientBoosting``). A family knows

* how to preprocess the spec's feature columns (string columns are categorical,
  everything else numeric) in one ``ColumnTransformer``;
* which hyperparameters it accepts (the keys of ``model.search_space``);
* how to train **iteratively** (:meth:`ModelFamily.trainer`): the preprocessing is
  fitted once, then each :meth:`IterativeTrainer.step` adds a little more model, so
  an early-stopping scheduler (ASHA) can stop a trial after any step;
* how to package the result as one fitted sklearn ``Pipeline`` (raw frame in,
  ``predict_proba`` out) for MLflow and the model server.

Custom families subclass :class:`ModelFamily` in any importable module.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as m
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from airloop.core.errors import SpecError

#: metrics a spec may name (`metric.name`); accuracy and f1 threshold at 0.5
METRICS = ("roc_auc", "accuracy", "f1", "log_loss")


# -- metrics ----------------------------------------------------------------------------
def score(metric: str, y_true, proba) -> float:
    """``metric`` of positive-class probabilities ``proba`` against 0/1 ``y_true``."""
    y = np.asarray(y_true).astype(int)
    p = np.clip(np.asarray(proba, dtype=float), 0.0, 1.0)
    if metric == "roc_auc":
        if len(np.unique(y)) < 2:
            return float("nan")
        return float(m.roc_auc_score(y, p))
    if metric == "accuracy":
        return float(m.accuracy_score(y, (p >= 0.5).astype(int)))
    if metric == "f1":
        return float(m.f1_score(y, (p >= 0.5).astype(int), zero_division=0))
    if metric == "log_loss":
        return float(m.log_loss(y, p, labels=[0, 1]))
    raise SpecError(f"metric.name: unknown metric {metric!r} (known: {', '.join(METRICS)})")


def is_better(candidate: float, reference: float, mode: str, margin: float = 0.0) -> bool:
    """True if ``candidate`` beats ``reference`` by at least ``margin`` under ``mode``."""
    if candidate is None or math.isnan(candidate):
        return False
    if reference is None or math.isnan(reference):
        return True
    if mode == "min":
        return candidate <= reference - margin
    return candidate >= reference + margin


def worst(mode: str) -> float:
    return math.inf if mode == "min" else -math.inf


# -- families ---------------------------------------------------------------------------
class IterativeTrainer:
    """One trial's model: preprocessing fitted once, the estimator grown by steps."""

    def __init__(self, family: ModelFamily, params: dict[str, Any], X: pd.DataFrame, y):
        self.family = family
        self.params = dict(params)
        self.preprocessor = family.preprocessor().fit(X)
        self._Xt = self.preprocessor.transform(X)
        self._y = np.asarray(y).astype(int)
        self.estimator = family.estimator(self.params)
        self.iterations = 0

    def step(self) -> None:
        """Train one more iteration (a few more trees, one more epoch, …)."""
        self.iterations += 1
        self.family.grow(self.estimator, self._Xt, self._y, self.iterations)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Positive-class probability for raw feature rows."""
        return self.predict_proba_transformed(self.transform(X))

    def transform(self, X: pd.DataFrame):
        """Rows as the estimator sees them (the fitted preprocessing applied)."""
        return self.preprocessor.transform(X)

    def predict_proba_transformed(self, Xt) -> np.ndarray:
        """Positive-class probability for rows already :meth:`transform`-ed."""
        return self.estimator.predict_proba(Xt)[:, 1]

    def pipeline(self):
        """The fitted model as one sklearn Pipeline (raw frame -> predict_proba)."""
        return Pipeline([("preprocess", self.preprocessor), ("model", self.estimator)])


class ModelFamily:
    """Base class: subclasses set :attr:`estimator_class` and implement :meth:`grow`."""

    #: fixed estimator arguments (the search space may override the tunable ones)
    fixed: dict[str, Any] = {}
    #: dotted path of the sklearn estimator class (resolved by :meth:`estimator_class`)
    estimator_path: str = ""

    def __init__(self, spec):
        self.spec = spec
        columns = {c.name: c for c in spec.columns}
        features = spec.feature_columns
        self.categorical = [f for f in features if columns[f].dtype == "string"]
        self.numeric = [f for f in features if columns[f].dtype != "string"]
        self.categories = [
            list(columns[f].allowed) if columns[f].allowed else "auto" for f in self.categorical
        ]
        self.seed = spec.model.seed

    @property
    def name(self) -> str:
        return f"{type(self).__module__}:{type(self).__qualname__}"

    def estimator_class(self):
        module, _, cls = self.estimator_path.rpartition(".")
        return getattr(importlib.import_module(module), cls)

    def validate(self, search_space: dict[str, Any]) -> None:
        """Raise SpecError naming the first search-space key the estimator lacks."""
        known = set(self.estimator_class()().get_params()) - set(self.locked)
        for key in search_space:
            if key not in known:
                raise SpecError(
                    f"model.search_space.{key}: not a hyperparameter of {self.name} "
                    f"(tunable: {', '.join(sorted(known))})"
                )

    #: parameters the family controls itself (iteration count, warm start, …)
    locked: tuple[str, ...] = ()

    def preprocessor(self):
        raise NotImplementedError

    def estimator(self, params: dict[str, Any]):
        return self.estimator_class()(**{**self.fixed, **params})

    def grow(self, estimator, Xt, y, iteration: int) -> None:
        raise NotImplementedError

    def trainer(self, params: dict[str, Any], X: pd.DataFrame, y) -> IterativeTrainer:
        return IterativeTrainer(self, params, X, y)

    def fit(self, params: dict[str, Any], X: pd.DataFrame, y, iterations: int):
        """Train ``iterations`` steps on (X, y); return the fitted Pipeline."""
        trainer = self.trainer(params, X, y)
        for _ in range(max(1, int(iterations))):
            trainer.step()
        return trainer.pipeline()


class HistGradientBoosting(ModelFamily):
    """``HistGradientBoostingClassifier``, ordinal-encoded native categoricals.

    One iteration adds :attr:`trees_per_iteration` trees (``warm_start=True``).
    """

    estimator_path = "sklearn.ensemble.HistGradientBoostingClassifier"
    trees_per_iteration = 5
    locked = ("max_iter", "warm_start", "early_stopping", "categorical_features", "random_state")

    def preprocessor(self):
        parts = []
        if self.categorical:
            parts.append(
                (
                    "categorical",
                    OrdinalEncoder(
                        categories=self.categories,
                        handle_unknown="use_encoded_value",
                        unknown_value=-1,  # negative = missing for HGB's native categoricals
                        encoded_missing_value=-1,
                    ),
                    self.categorical,
                )
            )
        if self.numeric:
            parts.append(("numeric", "passthrough", self.numeric))
        return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)

    def estimator(self, params: dict[str, Any]):
        cats = list(range(len(self.categorical))) or None
        return HistGradientBoostingClassifier(
            **params,
            max_iter=self.trees_per_iteration,
            warm_start=True,
            early_stopping=False,
            categorical_features=cats,
            random_state=self.seed,
        )

    def grow(self, estimator, Xt, y, iteration: int) -> None:
        estimator.set_params(max_iter=iteration * self.trees_per_iteration)
        estimator.fit(Xt, y)


class LogisticRegression(ModelFamily):
    """Logistic regression by SGD (``SGDClassifier(loss="log_loss")``), one-hot categoricals.

    One iteration is one ``partial_fit`` epoch over the (shuffled) training rows.
    """

    estimator_path = "sklearn.linear_model.SGDClassifier"
    # averaged SGD: per-epoch scores are far less noisy, which ASHA relies on
    fixed = {"loss": "log_loss", "alpha": 1e-4, "learning_rate": "optimal", "average": True}
    locked = ("loss", "random_state", "max_iter", "warm_start", "n_jobs", "verbose")

    def preprocessor(self):
        parts = []
        if self.categorical:
            parts.append(
                (
                    "categorical",
                    OneHotEncoder(
                        categories=self.categories, handle_unknown="ignore", sparse_output=False
                    ),
                    self.categorical,
                )
            )
        if self.numeric:
            # SGD needs comparable scales; trees do not (HistGradientBoosting passes through).
            parts.append(("numeric", StandardScaler(), self.numeric))
        return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)

    def estimator(self, params: dict[str, Any]):
        return SGDClassifier(**{**self.fixed, **params, "random_state": self.seed})

    def grow(self, estimator, Xt, y, iteration: int) -> None:
        order = np.random.default_rng(self.seed + iteration).permutation(len(y))
        estimator.partial_fit(Xt[order], y[order], classes=np.array([0, 1]))


def load_family(spec) -> ModelFamily:
    """The spec's model family, checked against its search space.

    Raises :class:`SpecError` naming ``model.family`` (or the offending
    ``model.search_space`` key) when the family cannot be used.
    """
    ref = spec.model.family
    where = f"{spec.path}: model.family"
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise SpecError(f"{where}: {ref!r} is not of the form module:Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"{where}: cannot import module {module_name!r} ({exc})") from exc
    cls = getattr(module, attr, None)
    if cls is None:
        raise SpecError(f"{where}: module {module_name!r} has no {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, ModelFamily)):
        raise SpecError(f"{where}: {ref!r} is not an airloop.runtime.models.ModelFamily subclass")
    family = cls(spec)
    try:
        family.validate(spec.model.search_space)
    except SpecError as exc:
        raise SpecError(f"{spec.path}: {exc}") from exc
    return family
