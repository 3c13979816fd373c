"""Train step: point-in-time training set → Ray Tune search → refit best → MLflow.

``airloop train --project <p> --run-id <dag run id> [--trigger manual|schedule|drift|…]``

1. The training frame comes from Feast (:func:`airloop.runtime.features.store.training_frame`).
2. Time-based split: the most recent ``model.holdout_days`` calendar days (UTC) are
   the holdout; of the rest, the latest ~20 % of rows validate the search.
3. Ray Tune samples ``model.num_samples`` configurations of ``model.search_space``
   (seeded), each trained iteratively and reported after every iteration so ASHA
   (``max_t=model.max_iterations``) stops weak trials early.
4. Every trial becomes a child run (params, per-iteration metric history, final
   metric, ``completed``/``pruned``/``error``) of ONE parent run per DAG run.
5. The best configuration (at its best iteration) is refitted on train+validation,
   scored on the holdout and logged as an sklearn model (``predict_proba``) with
   ``reference/reference.parquet`` (drift reference) and ``holdout/holdout.parquet``
   (the promotion gate's data).

Idempotent: a FINISHED parent run tagged with this ``airloop.dag_run_id`` is returned
as is. Every run this step starts is ended (FAILED on error).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from airloop.runtime import tracking
from airloop.core.errors import AirloopError
from airloop.core.naming import ray_temp_dir

log = logging.getLogger(__name__)

VALIDATION_SHARE = 0.2
REFERENCE_ROWS = 5000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trigger",
        default="manual",
        help="why this training runs (manual, schedule, drift, api, …); tagged on the run",
    )


# -- data ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame
    holdout: pd.DataFrame

    def rows(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.valid), "holdout": len(self.holdout)}


def split_frame(frame: pd.DataFrame, spec) -> Split:
    """Time-based split of a training frame (see the module docstring).

    Raises :class:`AirloopError` when the frame is too short or a part lacks a class.
    """
    missing = [c for c in (spec.timestamp, spec.label, *spec.feature_columns) if c not in frame]
    if missing:
        raise AirloopError(f"training frame lacks column(s) {missing}")
    frame = frame.dropna(subset=[spec.label])
    ts = pd.to_datetime(frame[spec.timestamp], utc=True)
    frame = frame.assign(**{spec.timestamp: ts}).sort_values(spec.timestamp, kind="stable")
    days = ts.dt.floor("D")
    distinct = np.sort(days.unique())
    holdout_days = spec.model.holdout_days
    if len(distinct) <= holdout_days:
        raise AirloopError(
            f"training data spans {len(distinct)} day(s); model.holdout_days={holdout_days} "
            "needs at least one more day to train on"
        )
    cutoff = distinct[-holdout_days]
    holdout = frame[days.loc[frame.index] >= cutoff]
    rest = frame[days.loc[frame.index] < cutoff]
    n_valid = max(1, int(round(len(rest) * VALIDATION_SHARE)))
    train, valid = rest.iloc[:-n_valid], rest.iloc[-n_valid:]
    for name, part in (("train", train), ("validation", valid), ("holdout", holdout)):
        classes = set(part[spec.label].astype(int).unique())
        if classes != {0, 1}:
            raise AirloopError(
                f"{name} split has {len(part)} rows with label classes {sorted(classes)}; "
                f"both 0 and 1 are needed (label {spec.label!r})"
            )
    return Split(train.reset_index(drop=True), valid.reset_index(drop=True),
                 holdout.reset_index(drop=True))


def _xy(part: pd.DataFrame, spec) -> tuple[pd.DataFrame, np.ndarray]:
    return part[spec.feature_columns].reset_index(drop=True), part[spec.label].astype(int).to_numpy()


# -- search -------------------------------------------------------------------------------
def search_space(spec) -> dict[str, Any]:
    """``model.search_space`` as Ray Tune domains."""
    from ray import tune

    out = {}
    for key, dim in spec.model.search_space.items():
        if dim.type == "uniform":
            out[key] = tune.uniform(dim.low, dim.high)
        elif dim.type == "loguniform":
            out[key] = tune.loguniform(dim.low, dim.high)
        elif dim.type == "randint":
            out[key] = tune.randint(dim.low, dim.high)
        else:
            out[key] = tune.choice(list(dim.values))
    return out


#: the result key ASHA counts training iterations by (reports carry several at once)
ITERATIONS = "iterations"


def report_points(max_iterations: int, grace_period: int, reduction_factor: float) -> list[int]:
    """The iterations after which a trial reports to Tune: ASHA's rung milestones
    (``grace_period * reduction_factor**k`` below ``max_iterations``, Ray's own formula),
    rounded up to whole iterations, and ``max_iterations``.

    ASHA decides only when a trial reaches a milestone (every other result answers
    CONTINUE), so reporting there alone gives the same decisions. Each report is a
    round trip through Tune's controller (~40 ms on 2 cores); one per iteration made
    that overhead as large as the training it scheduled. Every iteration's score is
    still recorded: a report carries the curve since the previous one."""
    max_t, grace = int(max_iterations), max(1, int(grace_period))
    rungs = int(math.log(max_t / grace) / math.log(reduction_factor) + 1) if max_t > grace else 0
    points = {math.ceil(grace * reduction_factor**k) for k in range(rungs)}
    return sorted({p for p in points if 1 <= p < max_t} | {max_t})


def _trainable(config, *, data, spec, metric: str, max_iterations: int,
               points: list[int]) -> None:
    """Ray Tune function trainable: one report per point of :func:`report_points`,
    carrying the validation score of every iteration since the last report."""
    from ray import tune

    from airloop.runtime.models import load_family, score

    from threadpoolctl import threadpool_limits

    X_train, y_train, X_valid, y_valid = data
    at = set(points)
    # One thread per trial: trials already fill the CPUs, and OpenMP spinning on a
    # shared machine made single steps take seconds instead of milliseconds.
    with threadpool_limits(limits=1):
        trainer = load_family(spec).trainer(config, X_train, y_train)  # preprocessing once
        valid = trainer.transform(X_valid)  # once, not per iteration
        curve: list[float] = []
        for iteration in range(1, max_iterations + 1):
            trainer.step()
            curve.append(score(metric, y_valid, trainer.predict_proba_transformed(valid)))
            if iteration in at:
                tune.report({metric: curve[-1], ITERATIONS: iteration, "curve": curve})
                curve = []


@dataclass
class Trial:
    trial_id: str
    params: dict[str, Any]
    history: list[float]
    status: str  # completed | pruned | error
    error: str | None = None

    @property
    def iterations(self) -> int:
        return len(self.history)

    def best(self, mode: str) -> tuple[float, int]:
        """(best value, 1-based iteration) of the history; NaN-safe."""
        values = [v if v is not None and not math.isnan(v) else None for v in self.history]
        scored = [(v, i + 1) for i, v in enumerate(values) if v is not None]
        if not scored:
            return float("nan"), 0
        # ties go to the earliest iteration (the smaller model)
        if mode == "min":
            return min(scored, key=lambda t: (t[0], t[1]))
        return max(scored, key=lambda t: (t[0], -t[1]))


RAY_START_ATTEMPTS = 3


@contextlib.contextmanager
def ray_session(settings):
    """Connect to ``settings.ray_address`` or start a small local Ray; shut down after."""
    import ray

    from airloop.core.settings import NO_TELEMETRY

    for key, value in NO_TELEMETRY.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if ray.is_initialized():  # the caller owns the session (tests, notebooks)
        yield
        return
    if settings.ray_address:
        ray.init(address=settings.ray_address, log_to_driver=False)
    else:
        temp = ray_temp_dir(settings.home)
        temp.mkdir(parents=True, exist_ok=True)
        # Ray gives a new node a fixed 30 s to register; on a saturated machine its agents
        # can take longer to import. Starting again is cheap next to failing the task.
        for attempt in range(1, RAY_START_ATTEMPTS + 1):
            try:
                ray.init(
                    address="local",
                    num_cpus=2,
                    include_dashboard=False,
                    _temp_dir=str(temp),
                    log_to_driver=False,
                )
                break
            except Exception as exc:
                if "timed out during startup" not in str(exc) or attempt == RAY_START_ATTEMPTS:
                    raise
                log.warning("local Ray did not start (attempt %d): %s; retrying", attempt, exc)
                ray.shutdown()
    try:
        yield
    finally:
        ray.shutdown()


def _history_callback(metric: str, history: dict[str, list[float]]):
    """A Tune callback collecting every reported metric per trial in the driver.

    Per-trial result files are not written (``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS``);
    the driver keeps the history and logs it to MLflow after the search.
    """
    from ray.tune import Callback

    class _History(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            curve = result.get("curve")
            if curve is None:  # a report of one iteration
                curve = [result.get(metric)]
            history.setdefault(trial.trial_id, []).extend(
                float(v) if v is not None else float("nan") for v in curve
            )

    return _History()


def run_search(split: Split, spec, settings, *, run_id: str) -> list[Trial]:
    """Tune ``model.search_space`` on the split's train/validation parts; every trial."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    from airloop.core.naming import safe_run_id

    model = spec.model
    metric, mode = spec.metric.name, spec.metric.mode
    max_t = model.max_iterations
    X_train, y_train = _xy(split.train, spec)
    X_valid, y_valid = _xy(split.valid, spec)
    storage = settings.home / "ray_results"
    name = f"{spec.tenant}.{spec.name}.{safe_run_id(run_id)}.{os.getpid()}"
    history: dict[str, list[float]] = {}
    with ray_session(settings):
        grace, factor = model.grace_period, model.reduction_factor
        trainable = tune.with_parameters(
            _trainable,
            data=(X_train, y_train, X_valid, y_valid),
            spec=spec,
            metric=metric,
            max_iterations=max_t,
            points=report_points(max_t, grace, factor),
        )
        tuner = tune.Tuner(
            trainable,
            param_space=search_space(spec),
            tune_config=tune.TuneConfig(
                metric=metric,
                mode=mode,
                num_samples=model.num_samples,
                reuse_actors=True,
                # the generator, not TuneConfig, enforces concurrency for this searcher
                search_alg=BasicVariantGenerator(
                    random_state=model.seed,
                    max_concurrent=model.max_concurrent_trials,
                ),
                scheduler=ASHAScheduler(
                    time_attr=ITERATIONS,
                    max_t=max_t,
                    grace_period=grace,
                    reduction_factor=factor,
                ),
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(storage),
                verbose=0,
                log_to_file=False,
                callbacks=[_history_callback(metric, history)],
            ),
        )
        # Trial result files are off (the callback keeps the history), so the result
        # grid's "cannot fetch metrics" warnings are expected noise.
        quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            grid = tuner.fit()
        finally:
            quiet.setLevel(level)
    trials: list[Trial] = []
    try:
        for i, result in enumerate(grid):
            trial_id = str((result.metrics or {}).get("trial_id") or "")
            if not trial_id and result.path:  # errored before its first report
                found = re.search(r"_([0-9a-f]{5}_\d{5})_", Path(result.path).name)
                trial_id = found.group(1) if found else ""
            trial_id = trial_id or f"trial_{i:03d}"
            values = history.get(trial_id, [])
            params = {k: result.config[k] for k in spec.model.search_space if k in result.config}
            if result.error is not None:
                status, error = "error", (str(result.error).strip().splitlines() or ["?"])[-1][:500]
            else:
                status = "completed" if len(values) >= max_t else "pruned"
                error = None
            trials.append(Trial(trial_id, params, values, status, error))
    finally:
        shutil.rmtree(storage / name, ignore_errors=True)  # history now lives in MLflow
    trials.sort(key=lambda t: t.trial_id)
    return trials


def best_trial(trials: list[Trial], mode: str) -> Trial:
    usable = [t for t in trials if t.status != "error" and t.best(mode)[1] > 0]
    if not usable:
        errors = "; ".join(f"{t.trial_id}: {t.error}" for t in trials if t.error)[:800]
        raise AirloopError(f"every tuning trial failed ({len(trials)} trials): {errors}")
    pick = min if mode == "min" else max
    return pick(usable, key=lambda t: t.best(mode)[0])


# -- MLflow -------------------------------------------------------------------------------
def _log_trials(client, experiment_id: str, parent_id: str, trials: list[Trial], spec,
                dag_run_id: str) -> None:
    from mlflow.entities import Metric, Param, RunTag

    metric, mode = spec.metric.name, spec.metric.mode
    for trial in trials:
        child = client.create_run(
            experiment_id,
            run_name=f"trial {trial.trial_id}",
            tags={
                "mlflow.parentRunId": parent_id,
                tracking.TAG_DAG_RUN: dag_run_id,
                tracking.TAG_ROLE: tracking.ROLE_TRIAL,
                "airloop.trial_id": trial.trial_id,
                "airloop.trial_status": trial.status,
            },
        )
        cid = child.info.run_id
        try:
            now = int(time.time() * 1000)
            best_value, best_iter = trial.best(mode)
            metrics = [
                Metric(f"validation_{metric}", v, now, step)
                for step, v in enumerate(trial.history, start=1)
                if not math.isnan(v)
            ]
            if trial.history and not math.isnan(trial.history[-1]):
                metrics.append(Metric(f"final_{metric}", trial.history[-1], now, 0))
            if best_iter:
                metrics.append(Metric(f"best_{metric}", best_value, now, 0))
            metrics.append(Metric("iterations", float(trial.iterations), now, 0))
            params = [Param(k, str(v)) for k, v in trial.params.items()]
            tags = [RunTag("airloop.trial_error", trial.error)] if trial.error else []
            for start in range(0, len(metrics), 900):  # log_batch takes <= 1000 metrics
                client.log_batch(
                    cid, metrics=metrics[start:start + 900],
                    params=params if start == 0 else [], tags=tags if start == 0 else [],
                )
            client.set_terminated(cid, "FAILED" if trial.status == "error" else "FINISHED")
        except BaseException:
            client.set_terminated(cid, "FAILED")
            raise


def _reference_frame(pipeline, X: pd.DataFrame, y: np.ndarray, spec) -> pd.DataFrame:
    ref = X.copy()
    ref["score"] = pipeline.predict_proba(X)[:, 1]
    ref[spec.label] = y
    if len(ref) > REFERENCE_ROWS:
        ref = ref.sample(n=REFERENCE_ROWS, random_state=spec.model.seed)
        ref = ref.sort_index()
    return ref.reset_index(drop=True)


def _previous_result(client, spec, run_id: str) -> dict | None:
    run = tracking.find_train_run(client, spec, run_id)
    if run is None:
        return None
    raw = run.data.tags.get(tracking.TAG_RESULT)
    if raw:
        return json.loads(raw)
    return None


def _end_stale_runs(client, spec, run_id: str) -> None:
    """A RUNNING parent of this DAG run was left by a killed try: mark it KILLED."""
    exp = client.get_experiment_by_name(tracking.experiment_name(spec))
    if exp is None:
        return
    for run in tracking.find_runs(client, exp.experiment_id, {tracking.TAG_DAG_RUN: run_id},
                                  ("RUNNING",)):
        client.set_terminated(run.info.run_id, "KILLED")


def tune_and_fit(frame: pd.DataFrame, spec, settings, *, run_id: str,
                 trigger: str = "manual") -> dict[str, Any]:
    """Search, refit and log one model for DAG run ``run_id`` from a training frame.

    ``frame`` has the entity key, the timestamp (UTC), ``spec.feature_columns`` and
    the label. Returns ``{"mlflow_run_id", "metric", "metric_name", "best_params",
    "trials", "pruned_trials", "rows"}``; a FINISHED parent run of ``run_id`` is
    returned without training again.
    """
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.models import infer_signature
    from threadpoolctl import threadpool_limits

    from airloop.runtime.models import load_family, score

    family = load_family(spec)  # bad family / search space fails before any run starts
    client = tracking.client(settings)
    previous = _previous_result(client, spec, run_id)
    if previous is not None:
        log.info("train: run id %s already trained (%s); reusing", run_id, previous["mlflow_run_id"])
        return previous
    split = split_frame(frame, spec)
    metric, mode = spec.metric.name, spec.metric.mode

    experiment_id = tracking.ensure_experiment(client, spec)
    _end_stale_runs(client, spec, run_id)
    tags = {
        **tracking.lineage_tags(spec, settings, run_id, trigger),
        tracking.TAG_ROLE: tracking.ROLE_PARENT,
        "airloop.model_family": family.name,
    }
    parent = client.create_run(experiment_id, run_name=f"train {run_id}", tags=tags)
    parent_id = parent.info.run_id
    try:
        started = time.monotonic()
        trials = run_search(split, spec, settings, run_id=run_id)
        tuning_seconds = time.monotonic() - started
        log.info("train: search of %d trials took %.1fs", len(trials), tuning_seconds)
        _log_trials(client, experiment_id, parent_id, trials, spec, run_id)
        best = best_trial(trials, mode)
        best_value, best_iteration = best.best(mode)

        fit_frame = pd.concat([split.train, split.valid], ignore_index=True)
        X_fit, y_fit = _xy(fit_frame, spec)
        X_hold, y_hold = _xy(split.holdout, spec)
        with threadpool_limits(limits=1):
            pipeline = family.fit(best.params, X_fit, y_fit, iterations=best_iteration)
        holdout_proba = pipeline.predict_proba(X_hold)[:, 1]
        holdout_value = score(metric, y_hold, holdout_proba)
        holdout_extra = {
            name: score(name, y_hold, holdout_proba) for name in ("roc_auc", "accuracy", "log_loss")
        }

        pruned = sum(t.status == "pruned" for t in trials)
        failed = sum(t.status == "error" for t in trials)
        result = {
            "mlflow_run_id": parent_id,
            "metric": holdout_value,
            "metric_name": metric,
            "best_params": best.params,
            "best_iterations": best_iteration,
            "trials": len(trials),
            "pruned_trials": pruned,
            "rows": split.rows(),
        }
        params = {
            **best.params,
            "best_iterations": best_iteration,
            "model_family": family.name,
            **{f"rows_{k}": v for k, v in split.rows().items()},
        }
        metrics = {
            f"holdout_{metric}": holdout_value,
            f"validation_{metric}": best_value,
            "trials": len(trials),
            "pruned_trials": pruned,
            "failed_trials": failed,
            "tuning_seconds": tuning_seconds,
            **{f"holdout_{k}": v for k, v in holdout_extra.items() if k != metric},
        }
        now = int(time.time() * 1000)
        client.log_batch(
            parent_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()
                     if v is not None and not math.isnan(v)],
            params=[Param(k, str(v)) for k, v in params.items()],
        )

        with tempfile.TemporaryDirectory(prefix="airloop-train-") as tmp:
            ref_dir, hold_dir = Path(tmp) / "reference", Path(tmp) / "holdout"
            ref_dir.mkdir()
            hold_dir.mkdir()
            _reference_frame(pipeline, X_fit, y_fit, spec).to_parquet(
                ref_dir / "reference.parquet", index=False
            )
            holdout = X_hold.copy()
            holdout[spec.label] = y_hold
            holdout.to_parquet(hold_dir / "holdout.parquet", index=False)
            client.log_artifacts(parent_id, str(ref_dir), "reference")
            client.log_artifacts(parent_id, str(hold_dir), "holdout")

        tracking.use(settings)
        # The fluent API checks the run against the process's active experiment; pin it
        # to the run's own so a caller's earlier set_experiment() cannot interfere.
        mlflow.set_experiment(experiment_id=client.get_run(parent_id).info.experiment_id)
        sample = X_fit.head(100)
        signature = infer_signature(sample, pipeline.predict_proba(sample))
        log.info("train: trials logged, refitted and scored at %.1fs; logging the model",
                 time.monotonic() - started)
        with mlflow.start_run(run_id=parent_id, log_system_metrics=False):
            info = mlflow.sklearn.log_model(
                pipeline,
                name="model",
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
                pyfunc_predict_fn="predict_proba",
                signature=signature,
                input_example=X_fit.head(3),
                pip_requirements=tracking.pip_requirements(),
            )
            client.set_tag(parent_id, tracking.TAG_MODEL_URI, info.model_uri)
            client.set_tag(parent_id, "airloop.model_id", info.model_id or "")
            client.set_tag(parent_id, tracking.TAG_RESULT, json.dumps(result, default=str))
        # leaving the block ends the parent run FINISHED: only now is the run reusable
    except BaseException:
        with contextlib.suppress(Exception):
            if client.get_run(parent_id).info.status == "RUNNING":
                client.set_terminated(parent_id, "FAILED")
        raise
    log.info("train: run %s holdout %s=%.4f (%d trials, %d pruned) in %.1fs",
             parent_id, metric, holdout_value, len(trials), pruned, time.monotonic() - started)
    return result


def run(spec, *, run_id: str, settings, trigger: str = "manual") -> dict[str, Any]:
    """Train the project's model for DAG run ``run_id``.

    Inputs: the Feast training frame of ``spec`` (``airloop.runtime.features.store``).
    Output: ``{"mlflow_run_id", "metric", "metric_name", "best_params", "trials",
    "pruned_trials", "rows"}``. Idempotent per ``run_id`` (see :func:`tune_and_fit`).
    """
    client = tracking.client(settings)
    previous = _previous_result(client, spec, run_id)
    if previous is not None:
        return previous
    from airloop.runtime.features.store import training_frame

    frame = training_frame(spec, settings)
    if frame is None or len(frame) == 0:
        raise AirloopError(f"project {spec.name!r} has no training rows; ingest data first")
    return tune_and_fit(frame, spec, settings, run_id=run_id, trigger=trigger)
