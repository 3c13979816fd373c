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
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
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
#: the result keys with the best validation score so far and its (1-based) iteration
BEST, BEST_ITERATION = "best", "best_iteration"


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


def trainable(config, *, data, spec, max_iterations: int, points: list[int]) -> None:
    """Ray Tune function trainable: one report per point of :func:`report_points`,
    carrying the validation score of every iteration since the last report
    (:data:`CURVE`) and the best score so far (:data:`BEST`, :data:`BEST_ITERATION`;
    ties go to the earliest iteration, the smaller model)."""
    metric, mode = spec.metric.name, spec.metric.mode
    X_train, y_train, X_valid, y_valid = data
    at = set(points)
    best, best_iteration = math.nan, 0
    # One thread per trial: trials already fill the CPUs, and OpenMP spinning on a
    # shared machine made single steps take seconds instead of milliseconds.
    with threadpool_limits(limits=1):
        trainer = load_family(spec).trainer(config, X_train, y_train)  # preprocessing once
        valid = trainer.transform(X_valid)  # once, not per iteration
        curve: list[float] = []
        for iteration in range(1, max_iterations + 1):
            trainer.step()
            value = score(metric, y_valid, trainer.predict_proba_transformed(valid))
            curve.append(value)
            if not math.isnan(value) and (
                    best_iteration == 0 or (value < best if mode == "min" else value > best)):
                best, best_iteration = value, iteration
            if iteration in at:
                tune.report({metric: value, ITERATIONS: iteration, CURVE: curve,
                             BEST: best, BEST_ITERATION: best_iteration})
                curve = []


def trial_status(last_result: dict, failed: bool, max_iterations: int) -> str:
    """``error``, ``completed`` (reached ``max_iterations``) or ``pruned`` (stopped by
    ASHA, which marks a stopped trial done just like a finished one)."""
    if failed:
        return "error"
    return "completed" if int(last_result.get(ITERATIONS) or 0) >= max_iterations else "pruned"


def error_summary(text: str | None) -> str:
    """The last line of an error trace (the exception and its message), cut to 500."""
    lines = [line for line in str(text or "").strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "?")[:500]


@dataclass(frozen=True)
class Trial:
    """One trial's outcome, read from Tune's result of it."""

    trial_id: str
    params: dict[str, Any]
    iterations: int  # trained before the trial ended (its last report)
    best: float  # best validation score (NaN: none)
    best_iteration: int  # 1-based iteration of ``best`` (0: none)
    status: str  # completed | pruned | error
    error: str | None = None


def run_search(split: Split, spec, settings, *, run_id: str,
               callbacks: Sequence[tune.Callback] = ()) -> list[Trial]:
    """Tune ``model.search_space`` on the split's train/validation parts; every trial,
    sorted by trial id. ``callbacks`` (Tune callbacks) see the trials as they run: the
    train step passes :class:`airloop.runtime.training.trials.TrialLogger`."""
    model = spec.model
    metric, mode = spec.metric.name, spec.metric.mode
    max_t = model.max_iterations
    X_train, y_train = xy(split.train, spec)
    X_valid, y_valid = xy(split.valid, spec)
    storage = settings.home / "ray_results"
    name = f"{spec.tenant}.{spec.name}.{safe_run_id(run_id)}.{os.getpid()}"
    with ray_session(settings):
        grace, factor = model.grace_period, model.reduction_factor
        tuner = tune.Tuner(
            tune.with_parameters(
                trainable,
                data=(X_train, y_train, X_valid, y_valid),
                spec=spec,
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
                callbacks=list(callbacks),
            ),
        )
        # Trial result files are off (ray_session), so the result grid's "cannot fetch
        # metrics" warnings are expected noise; each result's last report is all we read.
        quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            grid = tuner.fit()
        finally:
            quiet.setLevel(level)
    try:
        trials = [_trial(result, model) for result in grid]
    finally:
        shutil.rmtree(storage / name, ignore_errors=True)  # not read again: callbacks saw it all
    return sorted(trials, key=lambda t: t.trial_id)


def _trial(result, model) -> Trial:
    """A :class:`Trial` from Tune's ``Result`` of it (its last report, config, error)."""
    last = result.metrics or {}  # always has "trial_id", even before the first report
    failed = result.error is not None
    return Trial(
        trial_id=str(last["trial_id"]),
        params={k: result.config[k] for k in model.search_space if k in result.config},
        iterations=int(last.get(ITERATIONS) or 0),
        best=float(last.get(BEST, math.nan)),
        best_iteration=int(last.get(BEST_ITERATION) or 0),
        status=trial_status(last, failed, model.max_iterations),
        error=error_summary(result.error) if failed else None,
    )


def best_trial(trials: list[Trial], mode: str) -> Trial:
    """The trial with the best validation score at its best iteration."""
    usable = [t for t in trials if t.status != "error" and t.best_iteration > 0]
    if not usable:
        errors = "; ".join(f"{t.trial_id}: {t.error}" for t in trials if t.error)[:800]
        raise AirloopError(f"every tuning trial failed ({len(trials)} trials): {errors}")
    pick = min if mode == "min" else max
    return pick(usable, key=lambda t: t.best)
