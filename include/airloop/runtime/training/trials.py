"""Every trial of the search as a child MLflow run of the DAG run's parent run.

A child run has the trial's params, the per-iteration validation metric history
(steps 1..n), the final and best metric, ``iterations``, and the tags
``airloop.dag_run_id``, ``airloop.role=trial``, ``airloop.trial_id``,
``airloop.trial_status`` (completed / pruned / error) and ``airloop.trial_error``.
"""

from __future__ import annotations

import math
import time

from mlflow.entities import Metric, Param, RunTag

from airloop.runtime import tracking
from airloop.runtime.training.search import Trial


def log_trials(client, experiment_id: str, parent_id: str, trials: list[Trial], spec,
               dag_run_id: str) -> None:
    """One child run per trial, ended FINISHED (FAILED for an errored trial)."""
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
