"""The Ray Tune search of the train step.

Ray Tune samples ``model.num_samples`` configurations of ``model.search_space``
(seeded), each trained iteratively on the split's train part and scored on its
validation part. Trials report only at ASHA's milestones (:func:`report_points`), so
ASHA (``max_t=model.max_iterations``) stops weak trials early with the same decisions
as a report per iteration; every iteration's score still travels in the reports.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator
from threadpoolctl import threadpool_limits

from airloop.core.errors import AirloopError
from airloop.core.naming import safe_run_id
from airloop.runtime.models import load_family, score
from airloop.runtime.training.ray_session import ray_session
from airloop.runtime.training.split import Split, xy

#: the result key ASHA counts training iterations by (reports carry several at once)
ITERATIONS = "iterations"
#: the result key with the validation scores of the iterations since the previous report
CURVE = "curve"


def search_space(spec) -> dict[str, Any]:
    """``model.search_space`` as Ray Tune domains."""
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


def trainable(config, *, data, spec, metric: str, max_iterations: int,
              points: list[int]) -> None:
    """Ray Tune function trainable: one report per point of :func:`report_points`,
    carrying the validation score of every iteration since the last report."""
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
                tune.report({metric: curve[-1], ITERATIONS: iteration, CURVE: curve})
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


class _History(tune.Callback):
    """Collects every reported score per trial in the driver (per-trial result files
    are off: ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS``)."""

    def __init__(self, metric: str):
        self.metric = metric
        self.history: dict[str, list[float]] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        curve = result.get(CURVE)
        if curve is None:  # a report of one iteration
            curve = [result.get(self.metric)]
        self.history.setdefault(trial.trial_id, []).extend(
            float(v) if v is not None else float("nan") for v in curve
        )


def run_search(split: Split, spec, settings, *, run_id: str) -> list[Trial]:
    """Tune ``model.search_space`` on the split's train/validation parts; every trial."""
    model = spec.model
    metric, mode = spec.metric.name, spec.metric.mode
    max_t = model.max_iterations
    X_train, y_train = xy(split.train, spec)
    X_valid, y_valid = xy(split.valid, spec)
    storage = settings.home / "ray_results"
    name = f"{spec.tenant}.{spec.name}.{safe_run_id(run_id)}.{os.getpid()}"
    history = _History(metric)
    with ray_session(settings):
        grace, factor = model.grace_period, model.reduction_factor
        tuner = tune.Tuner(
            tune.with_parameters(
                trainable,
                data=(X_train, y_train, X_valid, y_valid),
                spec=spec,
                metric=metric,
                max_iterations=max_t,
                points=report_points(max_t, grace, factor),
            ),
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
                callbacks=[history],
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
            values = history.history.get(trial_id, [])
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
    """The trial with the best validation score at its best iteration."""
    usable = [t for t in trials if t.status != "error" and t.best(mode)[1] > 0]
    if not usable:
        errors = "; ".join(f"{t.trial_id}: {t.error}" for t in trials if t.error)[:800]
        raise AirloopError(f"every tuning trial failed ({len(trials)} trials): {errors}")
    pick = min if mode == "min" else max
    return pick(usable, key=lambda t: t.best(mode)[0])
