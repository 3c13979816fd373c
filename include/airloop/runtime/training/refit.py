"""The final model: the best configuration refitted on train+validation (at its best
iteration), scored on the holdout, and logged to the parent run as an sklearn model
(``predict_proba``) with ``reference/reference.parquet`` (the drift reference) and
``holdout/holdout.parquet`` (the promotion gate's data).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from threadpoolctl import threadpool_limits

from airloop.runtime import tracking
from airloop.runtime.models import ModelFamily, score
from airloop.runtime.training.split import Split, xy

REFERENCE_ROWS = 5000
#: holdout scores recorded besides the spec's own metric
HOLDOUT_METRICS = ("roc_auc", "accuracy", "log_loss")


@dataclass(frozen=True)
class Refit:
    pipeline: Any  # the fitted sklearn Pipeline
    X_fit: pd.DataFrame
    y_fit: np.ndarray
    X_holdout: pd.DataFrame
    y_holdout: np.ndarray
    holdout: dict[str, float]  # metric name -> holdout score (the spec's metric first)


def refit(family: ModelFamily, params: dict[str, Any], iterations: int, split: Split,
          spec) -> Refit:
    """Fit ``params`` for ``iterations`` on train+validation; score it on the holdout."""
    X_fit, y_fit = xy(pd.concat([split.train, split.valid], ignore_index=True), spec)
    X_hold, y_hold = xy(split.holdout, spec)
    with threadpool_limits(limits=1):  # as in the trials: no OpenMP spinning
        pipeline = family.fit(params, X_fit, y_fit, iterations=iterations)
    proba = pipeline.predict_proba(X_hold)[:, 1]
    names = dict.fromkeys((spec.metric.name, *HOLDOUT_METRICS))
    return Refit(pipeline, X_fit, y_fit, X_hold, y_hold,
                 {name: score(name, y_hold, proba) for name in names})


def reference_frame(fitted: Refit, spec) -> pd.DataFrame:
    """The drift reference: fit rows (at most :data:`REFERENCE_ROWS`, seeded sample)
    with the model's ``score`` and the label."""
    ref = fitted.X_fit.copy()
    ref["score"] = fitted.pipeline.predict_proba(fitted.X_fit)[:, 1]
    ref[spec.label] = fitted.y_fit
    if len(ref) > REFERENCE_ROWS:
        ref = ref.sample(n=REFERENCE_ROWS, random_state=spec.model.seed).sort_index()
    return ref.reset_index(drop=True)


def log_datasets(client, run_id: str, fitted: Refit, spec) -> None:
    """``reference/reference.parquet`` and ``holdout/holdout.parquet`` on the run."""
    with tempfile.TemporaryDirectory(prefix="airloop-train-") as tmp:
        ref_dir, hold_dir = Path(tmp) / "reference", Path(tmp) / "holdout"
        ref_dir.mkdir()
        hold_dir.mkdir()
        reference_frame(fitted, spec).to_parquet(ref_dir / "reference.parquet", index=False)
        holdout = fitted.X_holdout.copy()
        holdout[spec.label] = fitted.y_holdout
        holdout.to_parquet(hold_dir / "holdout.parquet", index=False)
        client.log_artifacts(run_id, str(ref_dir), "reference")
        client.log_artifacts(run_id, str(hold_dir), "holdout")


def log_model(fitted: Refit):
    """Log the pipeline as the active run's ``model`` (pyfunc ``predict_proba``, pinned
    requirements); return MLflow's ``ModelInfo``."""
    sample = fitted.X_fit.head(100)
    return mlflow.sklearn.log_model(
        fitted.pipeline,
        name="model",
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        pyfunc_predict_fn="predict_proba",
        signature=infer_signature(sample, fitted.pipeline.predict_proba(sample)),
        input_example=fitted.X_fit.head(3),
        pip_requirements=tracking.pip_requirements(),
    )
