"""One factory builds the operator of a pipeline step, in either execution mode.

``settings.mode`` (``AIRLOOP_MODE``, default ``local``) selects:

* ``kubernetes`` — a ``KubernetesPodOperator`` running the runtime image
  (see :mod:`airloop_ops.pods`);
* ``local`` — :class:`airloop_ops.local.LocalStepOperator`, the runtime virtualenv.

Both run the same argv, ``airloop <step> --project <name> --run-id {{ run_id }} …``,
and both push the step's JSON result to XCom.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airloop.core.errors import AirloopError
from airloop.core.settings import Settings
from airloop.core.spec import STEPS

from airloop_ops.local import LocalStepOperator

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airloop.core.spec import ProjectSpec

RUN_ID = "{{ run_id }}"


def step_arguments(spec: ProjectSpec, step: str, extra_args: Sequence[str] = ()) -> list[str]:
    """The step's argv after the program name (``{{ run_id }}`` is rendered by Airflow)."""
    if step not in STEPS:
        raise AirloopError(f"unknown step {step!r} (steps: {', '.join(STEPS)})")
    return [step, "--project", spec.name, "--run-id", RUN_ID, *(str(a) for a in extra_args)]


def step_operator(
    spec: ProjectSpec,
    step: str,
    settings: Settings,
    *,
    task_id: str | None = None,
    extra_args: Sequence[str] = (),
    **kwargs: Any,
) -> BaseOperator:
    """The operator running ``airloop <step>`` for ``spec``'s project.

    ``kwargs`` go to the operator (e.g. ``outlets``); retries and owner come from the
    DAG's ``default_args``. No I/O, no connection or DB lookup: safe at parse time.
    """
    arguments = step_arguments(spec, step, extra_args)
    task_id = task_id or step
    if settings.mode == "kubernetes":
        # Imported only in kubernetes mode: it pulls in the Kubernetes client.
        from airloop_ops import pods

        return pods.pod_operator(
            spec, step, settings, task_id=task_id, arguments=arguments, **kwargs
        )
    return LocalStepOperator(
        task_id=task_id, arguments=arguments, runtime_cli=str(settings.venv_tool("runtime", "airloop")),
        **kwargs,
    )
