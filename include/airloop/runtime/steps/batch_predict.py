"""``airloop batch_predict``: score every entity's latest features with the champion.

Contract
--------
Inputs: each entity's latest feature row — from the offline store
(:func:`airloop.runtime.features.store.latest_offline_features`) or, with ``--input``, from an
explicit parquet table (reduced to the latest row per entity when it holds more) — and
the model behind ``models:/<model_name>@champion``.

Output: ``<batch>/<safe run id>.parquet`` with one row per entity: entity key, event
timestamp, ``score`` (probability of the positive class), ``prediction`` (score >= 0.5),
``model_version``, ``run_id``. Idempotent: the same run id atomically replaces the same
file. Result: ``{"rows", "path", "model_version"}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from airloop.core.errors import AirloopError
from airloop.core.io import atomic_path
from airloop.core.layout import layout
from airloop.core.naming import safe_run_id
from airloop.core.settings import Settings
from airloop.core.spec import ProjectSpec
from airloop.runtime import tracking
from airloop.runtime.features.store import latest_offline_features

THRESHOLD = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        default=None,
        help="parquet table of features to score instead of the offline store",
    )


def latest_per_entity(frame, spec: ProjectSpec):
    """The latest row (by event timestamp) of each entity."""
    if spec.timestamp in frame.columns:
        frame = frame.sort_values([spec.entity_key, spec.timestamp], kind="stable")
    return frame.drop_duplicates(spec.entity_key, keep="last").reset_index(drop=True)


def _features(spec: ProjectSpec, settings: Settings, input: str | None):
    if input is not None:
        path = Path(input)
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise AirloopError(f"batch_predict: cannot read --input {path}: {exc}") from exc
    else:
        frame = latest_offline_features(spec, settings)
    missing = [c for c in [spec.entity_key, *spec.feature_columns] if c not in frame.columns]
    if missing:
        where = input or "the offline store"
        raise AirloopError(f"batch_predict: {where} lacks column(s) {missing}")
    return latest_per_entity(frame, spec)


def run(spec: ProjectSpec, *, run_id: str, settings: Settings,
        input: str | None = None) -> dict[str, Any]:
    """Score the latest features of every entity with the champion (see module doc)."""
    tracking.use(settings)
    version = tracking.alias_version(tracking.client(settings), spec.model_name, "champion")
    if version is None:
        raise AirloopError(
            f"batch_predict: registered model {spec.model_name!r} has no 'champion' alias "
            f"(train and promote a model first)"
        )
    frame = _features(spec, settings, input)
    # Load the exact version the alias named, not the alias: it may move meanwhile.
    model = mlflow.pyfunc.load_model(f"models:/{spec.model_name}/{version.version}")
    if len(frame):
        raw = np.asarray(model.predict(frame[spec.feature_columns]))
        scores = raw[:, 1] if raw.ndim == 2 else raw
    else:
        scores = np.empty(0)
    out = pd.DataFrame({
        spec.entity_key: frame[spec.entity_key].to_numpy(),
        spec.timestamp: (frame[spec.timestamp].to_numpy() if spec.timestamp in frame.columns
                         else [pd.NaT] * len(frame)),
        "score": scores.astype("float64"),
        "prediction": (scores >= THRESHOLD).astype("int64"),
        "model_version": str(version.version),
        "run_id": run_id,
    })
    path = layout(spec, settings).batch / f"{safe_run_id(run_id)}.parquet"
    with atomic_path(path) as tmp:
        out.to_parquet(tmp, index=False)
    return {"rows": len(out), "path": str(path), "model_version": str(version.version)}
