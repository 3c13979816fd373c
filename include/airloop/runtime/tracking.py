"""MLflow helpers shared by the train, register, gate, promote and monitor steps.

One experiment per project, named ``/<tenant>/<project>``. A train step's parent run
is tagged ``airloop.dag_run_id`` (and ``airloop.role=parent``); its registered model
version carries the same tag, which is how every later step of the DAG run finds
its inputs — no step needs more than ``--project`` and ``--run-id``.
"""

from __future__ import annotations

import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from airloop.core.errors import AirloopError
from airloop.core.settings import REPO_ROOT
from airloop.runtime.versioning import current_version

TAG_DAG_RUN = "airloop.dag_run_id"
TAG_ROLE = "airloop.role"
TAG_MODEL_URI = "airloop.model_uri"
TAG_RESULT = "airloop.result"
ROLE_PARENT = "parent"
ROLE_TRIAL = "trial"
PINNED_PACKAGES = ("scikit-learn", "pandas", "numpy", "mlflow")


def client(settings):
    """An ``MlflowClient`` for the settings' tracking server (registry on the same URI)."""
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def use(settings) -> None:
    """Point the fluent ``mlflow`` API at the settings' server (call inside a step)."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)


def experiment_name(spec) -> str:
    return f"/{spec.tenant}/{spec.name}"


def ensure_experiment(mlflow_client, spec) -> str:
    """Id of the project's experiment, created on first use (safe under races)."""
    name = experiment_name(spec)
    exp = mlflow_client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return mlflow_client.create_experiment(
            name, tags={"airloop.tenant": spec.tenant, "airloop.project": spec.name}
        )
    except MlflowException as exc:  # created meanwhile by a concurrent step
        exp = mlflow_client.get_experiment_by_name(name)
        if exp is None:
            raise AirloopError(f"cannot create MLflow experiment {name}: {exc}") from exc
        return exp.experiment_id


def _quote(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def find_runs(
    mlflow_client, experiment_id: str, tags: dict[str, str], statuses: tuple[str, ...] = ()
) -> list:
    """Runs of the experiment carrying every tag in ``tags`` (newest first)."""
    clauses = [f"tags.`{k}` = {_quote(v)}" for k, v in tags.items()]
    runs = mlflow_client.search_runs(
        [experiment_id],
        filter_string=" and ".join(clauses),
        max_results=1000,
        order_by=["attributes.start_time DESC"],
    )
    return [r for r in runs if not statuses or r.info.status in statuses]


def find_train_run(mlflow_client, spec, dag_run_id: str, statuses=("FINISHED",)):
    """The newest train parent run of ``dag_run_id`` with one of ``statuses``, or None."""
    exp = mlflow_client.get_experiment_by_name(experiment_name(spec))
    if exp is None:
        return None
    runs = find_runs(
        mlflow_client,
        exp.experiment_id,
        {TAG_DAG_RUN: dag_run_id, TAG_ROLE: ROLE_PARENT},
        statuses,
    )
    return runs[0] if runs else None


def require_train_run(mlflow_client, spec, dag_run_id: str):
    run = find_train_run(mlflow_client, spec, dag_run_id)
    if run is None:
        raise AirloopError(
            f"no finished train run for project {spec.name!r} and run id {dag_run_id!r} "
            f"in experiment {experiment_name(spec)}; run the train step first"
        )
    return run


def model_version_for_run(mlflow_client, model_name: str, dag_run_id: str):
    """The registered version of ``model_name`` tagged with ``dag_run_id``, or None."""
    try:
        versions = mlflow_client.search_model_versions(
            f"name = {_quote(model_name)}", max_results=10000
        )
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    mine = [v for v in versions if v.tags.get(TAG_DAG_RUN) == dag_run_id]
    if not mine:
        return None
    return min(mine, key=lambda v: int(v.version))


def require_challenger(mlflow_client, spec, dag_run_id: str):
    version = model_version_for_run(mlflow_client, spec.model_name, dag_run_id)
    if version is None:
        raise AirloopError(
            f"no registered version of model {spec.model_name!r} for run id {dag_run_id!r}; "
            "run the register step first"
        )
    return version


def alias_version(mlflow_client, model_name: str, alias: str):
    """The version behind ``alias`` of ``model_name``, or None (no model / no alias)."""
    try:
        return mlflow_client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def ensure_registered_model(mlflow_client, spec) -> None:
    try:
        mlflow_client.get_registered_model(spec.model_name)
        return
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
            raise
    try:
        mlflow_client.create_registered_model(
            spec.model_name,
            tags={"airloop.tenant": spec.tenant, "airloop.project": spec.name},
            description=spec.description,
        )
    except MlflowException as exc:  # registered meanwhile
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise


def download(mlflow_client, run_id: str, artifact_path: str, dst: Path) -> Path:
    """Download one artifact of a run into ``dst``; clear error if it is missing."""
    dst.mkdir(parents=True, exist_ok=True)
    try:
        return Path(mlflow_client.download_artifacts(run_id, artifact_path, str(dst)))
    except Exception as exc:
        raise AirloopError(f"run {run_id} has no artifact {artifact_path!r}: {exc}") from exc


# -- lineage -----------------------------------------------------------------------------
def pip_requirements() -> list[str]:
    """Exact pins of the libraries a served model needs (from this environment)."""
    return [f"{name}=={version(name)}" for name in PINNED_PACKAGES]


def git_commit(settings) -> str:
    """``settings.git_commit``, else ``git rev-parse HEAD`` of the checkout, else ``unknown``."""
    if settings.git_commit:
        return settings.git_commit
    if REPO_ROOT is None:
        return "unknown"
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def data_version(spec, settings) -> str:
    """The dataset version from :mod:`airloop.runtime.versioning` (``unversioned`` if none)."""
    return str(current_version(spec, settings) or "unversioned")


def lineage_tags(spec, settings, dag_run_id: str, trigger: str) -> dict[str, Any]:
    return {
        TAG_DAG_RUN: dag_run_id,
        "airloop.project": spec.name,
        "airloop.tenant": spec.tenant,
        "airloop.trigger": trigger,
        "airloop.data_version": data_version(spec, settings),
        "airloop.git_commit": git_commit(settings),
        "airloop.feature_views": ",".join(spec.feature_views),
        "airloop.feature_service": spec.feature_service,
    }
