"""The five DAGs of every project spec.

``<p>__ingest`` → (asset) → ``<p>__materialize``; ``<p>__train`` (train → register →
gate → deploy → promote, or ``rejected``); ``<p>__monitor`` (monitor → trigger
``<p>__train`` with ``{"trigger": "drift"}``, or ``no_retrain``); ``<p>__batch_predict``.
Tasks come from :func:`airloop_ops.factory.step_operator` only; the decisions are the
steps' own (the gate's ``promote`` and the monitor's ``retrain`` in their XCom results).

Building does no I/O beyond reading the spec files: no DB query, no connection lookup.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import BranchPythonOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param
from airloop.core.errors import AirloopError, SpecError
from airloop.core.settings import Settings, load
from airloop.core.spec import load_spec_file, spec_files

from airloop_ops import assets
from airloop_ops.factory import step_operator

if TYPE_CHECKING:
    from airloop.core.spec import ProjectSpec

KINDS = ("ingest", "materialize", "train", "monitor", "batch_predict")
TRIGGERS = ("manual", "schedule", "drift", "api")
START_DATE = datetime(2025, 1, 1, tzinfo=UTC)
RETRY_DELAY = timedelta(minutes=1)
ERROR_DAG_ID = "airloop__spec_errors"


def dag_id(spec: ProjectSpec, kind: str) -> str:
    return f"{spec.name}__{kind}"


def _dag(spec: ProjectSpec, kind: str, settings: Settings, doc_md: str | None,
         **kwargs: Any) -> DAG:
    description = spec.description or f"airloop project {spec.name}"
    intro = (
        f"### `{dag_id(spec, kind)}`\n\nProject **{spec.name}** of tenant **{spec.tenant}** "
        f"(spec `{spec.path.name}`), steps run in `{settings.mode}` mode.\n\n"
    )
    return DAG(
        dag_id=dag_id(spec, kind),
        description=f"{description} [{kind.replace('_', ' ')}]",
        doc_md=intro + (doc_md or ""),
        start_date=START_DATE,
        catchup=False,
        tags=["airloop", spec.tenant, spec.name, kind],
        default_args={
            "owner": spec.contact,
            "retries": settings.task_retries,
            "retry_delay": RETRY_DELAY,
        },
        **kwargs,
    )


def _cron(expression: str | None):
    """A cron/preset schedule in UTC (``None`` stays ``None``: manual or triggered)."""
    return CronTriggerTimetable(expression, timezone="UTC") if expression else None


def _branch(ti, source: str, key: str, if_true: str, if_false: str) -> str:
    result = ti.xcom_pull(task_ids=source) or {}
    if key not in result:
        raise AirloopError(f"task {source!r} returned no {key!r} in its result: {result}")
    return if_true if result[key] else if_false


def branch_on(source: str, key: str, *, if_true: str, if_false: str, task_id: str):
    """Follow ``if_true`` when ``source``'s XCom result has a truthy ``key``."""
    return BranchPythonOperator(
        task_id=task_id,
        python_callable=_branch,
        op_kwargs={"source": source, "key": key, "if_true": if_true, "if_false": if_false},
    )


def project_dags(spec: ProjectSpec, settings: Settings, doc_md: str | None = None
                 ) -> dict[str, DAG]:
    """The five DAGs of one project, keyed by DAG id."""
    schedules = spec.schedules
    dataset = assets.dataset(spec)
    out: dict[str, DAG] = {}

    with _dag(spec, "ingest", settings, doc_md, schedule=_cron(schedules.ingest)) as dag:
        step_operator(spec, "ingest", settings, outlets=[dataset])
    out[dag.dag_id] = dag

    materialize_schedule = (
        AssetOrTimeSchedule(timetable=_cron(schedules.materialize), assets=dataset)
        if schedules.materialize
        else [dataset]
    )
    with _dag(spec, "materialize", settings, doc_md, schedule=materialize_schedule) as dag:
        step_operator(spec, "materialize", settings)
    out[dag.dag_id] = dag

    params = {
        "trigger": Param(
            "schedule" if schedules.train else "manual",
            type="string",
            enum=list(TRIGGERS),
            description="What started this training run (recorded on the model version).",
        ),
        "reason": Param(
            None,
            type=["null", "string"],
            maxLength=500,
            description="Free text shown with the run, e.g. the monitor's drift summary.",
        ),
    }
    with _dag(
        spec,
        "train",
        settings,
        doc_md,
        schedule=_cron(schedules.train),
        params=params,
        max_active_runs=1,
    ) as dag:
        train = step_operator(spec, "train", settings, extra_args=["--trigger", "{{ params.trigger }}"])
        register = step_operator(spec, "register", settings)
        gate = step_operator(spec, "gate", settings)
        decide = branch_on(
            "gate", "promote", if_true="deploy", if_false="rejected", task_id="promotion_decision"
        )
        deploy = step_operator(spec, "deploy", settings)
        promote = step_operator(spec, "promote", settings)
        rejected = EmptyOperator(task_id="rejected")
        train >> register >> gate >> decide >> [deploy, rejected]
        deploy >> promote
    out[dag.dag_id] = dag

    with _dag(
        spec, "monitor", settings, doc_md, schedule=_cron(schedules.monitor), max_active_runs=1
    ) as dag:
        monitor = step_operator(spec, "monitor", settings)
        decide = branch_on(
            "monitor", "retrain", if_true="retrain", if_false="no_retrain", task_id="retrain_decision"
        )
        retrain = TriggerDagRunOperator(
            task_id="retrain",
            trigger_dag_id=dag_id(spec, "train"),
            # One retraining run per monitor run, even when this task is retried.
            trigger_run_id="drift__{{ run_id }}",
            skip_when_already_exists=True,
            conf={
                "trigger": "drift",
                "reason": "{{ ti.xcom_pull(task_ids='monitor')['reason'] }}",
            },
            wait_for_completion=False,
        )
        no_retrain = EmptyOperator(task_id="no_retrain")
        monitor >> decide >> [retrain, no_retrain]
    out[dag.dag_id] = dag

    with _dag(spec, "batch_predict", settings, doc_md, schedule=_cron(schedules.batch_predict)) as dag:
        step_operator(spec, "batch_predict", settings)
    out[dag.dag_id] = dag
    return out


class SpecErrorsDag(DAG):
    """Carries the errors of invalid project specs into Airflow's import errors.

    It is returned next to the valid projects' DAGs; the DagBag validates each DAG on
    its own before bagging it, so raising here records one import error on the DAG
    file (shown in the UI and ``/api/v2/importErrors``) naming the spec file and field,
    while every valid project's DAGs still load. It is never bagged or scheduled.
    """

    def validate(self) -> None:
        raise SpecError(self.description or "invalid project spec")


def build_all(projects_dir: Path | None = None, doc_md: str | None = None,
              settings: Settings | None = None) -> dict[str, DAG]:
    """DAGs of every spec in ``projects_dir`` (settings by default), keyed by DAG id.

    An invalid spec does not stop the others: its errors are reported through one
    :class:`SpecErrorsDag` (an import error of the DAG file).
    """
    settings = settings or load()
    projects_dir = projects_dir or settings.projects_dir
    dags: dict[str, DAG] = {}
    errors: list[str] = []
    if not projects_dir.is_dir():
        errors.append(f"{projects_dir}: projects folder not found (AIRLOOP_PROJECTS_DIR)")
    else:
        for path in spec_files(projects_dir):
            try:
                spec = load_spec_file(path)
            except SpecError as exc:
                errors.append(str(exc))
                continue
            dags.update(project_dags(spec, settings, doc_md))
    if errors:
        dags[ERROR_DAG_ID] = SpecErrorsDag(
            dag_id=ERROR_DAG_ID,
            description="; ".join(errors),
            schedule=None,
            start_date=START_DATE,
            catchup=False,
            tags=["airloop", "spec-error"],
        )
    return dags
