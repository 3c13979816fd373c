"""The parent MLflow run of one DAG run's training.

One parent run per DAG run, tagged ``airloop.dag_run_id`` and ``airloop.role=parent``
with the lineage tags. It is FINISHED only once its result (tag ``airloop.result``) is
recorded, which is what makes a later try reuse it; a try killed midway leaves it
RUNNING, and the next try marks it KILLED.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

from airloop.runtime import tracking


def previous_result(client, spec, dag_run_id: str) -> dict | None:
    """The recorded result of a FINISHED parent run of ``dag_run_id``, or None."""
    run = tracking.find_train_run(client, spec, dag_run_id)
    if run is None:
        return None
    raw = run.data.tags.get(tracking.TAG_RESULT)
    return json.loads(raw) if raw else None


def end_stale_runs(client, spec, dag_run_id: str) -> None:
    """A RUNNING parent of this DAG run was left by a killed try: mark it KILLED."""
    exp = client.get_experiment_by_name(tracking.experiment_name(spec))
    if exp is None:
        return
    for run in tracking.find_runs(client, exp.experiment_id, {tracking.TAG_DAG_RUN: dag_run_id},
                                  ("RUNNING",)):
        client.set_terminated(run.info.run_id, "KILLED")


@contextlib.contextmanager
def parent_run(client, experiment_id: str, dag_run_id: str, tags: dict) -> Iterator[str]:
    """Start the parent run of ``dag_run_id``; yield its id. An error ends it FAILED.

    The body ends the run FINISHED itself (after recording the result); a run still
    RUNNING when the body raises is ended FAILED.
    """
    parent = client.create_run(experiment_id, run_name=f"train {dag_run_id}",
                               tags={**tags, tracking.TAG_ROLE: tracking.ROLE_PARENT})
    parent_id = parent.info.run_id
    try:
        yield parent_id
    except BaseException:
        with contextlib.suppress(Exception):
            if client.get_run(parent_id).info.status == "RUNNING":
                client.set_terminated(parent_id, "FAILED")
        raise
