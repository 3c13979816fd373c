"""Train step: point-in-time training set → Ray Tune search → refit best → MLflow.

``airloop train --project <p> --run-id <dag run id> [--trigger manual|schedule|drift|…]``

Inputs: the project spec and the Feast training frame of its feature service
(:func:`airloop.runtime.features.store.training_frame`): entity key, timestamp (UTC),
``spec.feature_columns`` and the label.

1. Time-based split (:mod:`airloop.runtime.training.split`): the most recent
   ``model.holdout_days`` days are the holdout; of the rest, the latest ~20 % of rows
   validate the search.
2. Ray Tune search (:mod:`airloop.runtime.training.search`): ``model.num_samples``
   seeded configurations of ``model.search_space``, ASHA stopping weak trials early.
3. Every trial becomes a child run (params, per-iteration metric history, final
   metric, ``completed``/``pruned``/``error``) of ONE parent run per DAG run
   (:mod:`airloop.runtime.training.trials`, :mod:`airloop.runtime.training.parent`).
4. The best configuration (at its best iteration) is refitted on train+validation,
   scored on the holdout and logged as an sklearn model (``predict_proba``) with
   ``reference/reference.parquet`` (drift reference) and ``holdout/holdout.parquet``
   (the promotion gate's data) (:mod:`airloop.runtime.training.refit`).

Output: ``{"mlflow_run_id", "metric", "metric_name", "best_params", "best_iterations",
"trials", "pruned_trials", "rows"}``, also recorded on the parent run.

Idempotent: a FINISHED parent run tagged with this ``airloop.dag_run_id`` is returned
as is. Every run this step starts is ended (FAILED on error).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param

from airloop.core.errors import AirloopError
from airloop.runtime import tracking
from airloop.runtime.features.store import training_frame
from airloop.runtime.models import load_family
from airloop.runtime.training import parent, refit
from airloop.runtime.training.search import best_trial, run_search
from airloop.runtime.training.split import split_frame
from airloop.runtime.training.trials import TrialLogger

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trigger",
        default="manual",
        help="why this training runs (manual, schedule, drift, api, …); tagged on the run",
    )


def run(spec, *, run_id: str, settings, trigger: str = "manual",
        frame: pd.DataFrame | None = None) -> dict[str, Any]:
    """Train the project's model for DAG run ``run_id``; return the step's output.

    ``frame`` is the training frame (entity key, UTC timestamp, ``spec.feature_columns``,
    label); the CLI passes none and it is read from Feast. Idempotent: the result of a
    FINISHED parent run of ``run_id`` is returned before any data is read.
    """
    client = tracking.client(settings)
    previous = parent.previous_result(client, spec, run_id)
    if previous is not None:
        log.info("train: run id %s already trained (%s); reusing", run_id, previous["mlflow_run_id"])
        return previous
    if frame is None:
        frame = training_frame(spec, settings)
        if frame is None or len(frame) == 0:
            raise AirloopError(f"project {spec.name!r} has no training rows; ingest data first")
    return _train(client, frame, spec, settings, run_id=run_id, trigger=trigger)


def _train(client, frame: pd.DataFrame, spec, settings, *, run_id: str,
           trigger: str) -> dict[str, Any]:
    """Search, refit and log one model for DAG run ``run_id`` under a new parent run."""
    family = load_family(spec)  # bad family / search space fails before any run starts
    split = split_frame(frame, spec)
    metric, mode = spec.metric.name, spec.metric.mode

    experiment_id = tracking.ensure_experiment(client, spec)
    parent.end_stale_runs(client, spec, run_id)
    tags = {**tracking.lineage_tags(spec, settings, run_id, trigger),
            "airloop.model_family": family.name}
    with parent.parent_run(client, experiment_id, run_id, tags) as parent_id:
        started = time.monotonic()
        trial_logger = TrialLogger(
            settings, experiment_id=experiment_id, experiment_name=tracking.experiment_name(spec),
            parent_run_id=parent_id, dag_run_id=run_id, metric=metric,
            max_iterations=spec.model.max_iterations,
        )
        try:
            trials = run_search(split, spec, settings, run_id=run_id, callbacks=[trial_logger])
        finally:
            trial_logger.end_open_runs()
        tuning_seconds = time.monotonic() - started
        log.info("train: search of %d trials (logged as they ran) took %.1fs",
                 len(trials), tuning_seconds)
        best = best_trial(trials, mode)

        fitted = refit.refit(family, best.params, best.best_iteration, split, spec)
        holdout_value = fitted.holdout[metric]
        pruned = sum(t.status == "pruned" for t in trials)
        failed = sum(t.status == "error" for t in trials)
        result = {
            "mlflow_run_id": parent_id,
            "metric": holdout_value,
            "metric_name": metric,
            "best_params": best.params,
            "best_iterations": best.best_iteration,
            "trials": len(trials),
            "pruned_trials": pruned,
            "rows": split.rows(),
        }
        params = {
            **best.params,
            "best_iterations": best.best_iteration,
            "model_family": family.name,
            **{f"rows_{k}": v for k, v in split.rows().items()},
        }
        metrics = {
            **{f"holdout_{k}": v for k, v in fitted.holdout.items()},
            f"validation_{metric}": best.best,
            "trials": len(trials),
            "pruned_trials": pruned,
            "failed_trials": failed,
            "tuning_seconds": tuning_seconds,
        }
        now = int(time.time() * 1000)
        client.log_batch(
            parent_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()
                     if v is not None and not math.isnan(v)],
            params=[Param(k, str(v)) for k, v in params.items()],
        )
        refit.log_datasets(client, parent_id, fitted, spec)

        tracking.use(settings)
        # The fluent API checks the run against the process's active experiment; pin it
        # to the run's own so a caller's earlier set_experiment() cannot interfere.
        mlflow.set_experiment(experiment_id=experiment_id)
        log.info("train: refitted and scored at %.1fs; logging the model",
                 time.monotonic() - started)
        with mlflow.start_run(run_id=parent_id, log_system_metrics=False):
            info = refit.log_model(fitted)
            client.set_tag(parent_id, tracking.TAG_MODEL_URI, info.model_uri)
            client.set_tag(parent_id, "airloop.model_id", info.model_id or "")
            client.set_tag(parent_id, tracking.TAG_RESULT, json.dumps(result, default=str))
        # leaving the block ends the parent run FINISHED: only now is the run reusable
    log.info("train: run %s holdout %s=%.4f (%d trials, %d pruned) in %.1fs",
             parent_id, metric, holdout_value, len(trials), pruned, time.monotonic() - started)
    return result

