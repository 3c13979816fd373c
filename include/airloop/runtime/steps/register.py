"""Register step: the train run's model becomes a version of ``spec.model_name``.

``airloop register --project <p> --run-id <dag run id>``

The train run is found by its ``airloop.dag_run_id`` tag. The new version carries the
lineage tags (git commit, data version, feature views, feature service, DAG run id,
metric, trigger) and gets the alias ``challenger``.

Idempotent: a version already tagged with this DAG run id is reused (``created``
false); a second version is never created.
"""

from __future__ import annotations

import logging
from typing import Any

from airloop.core.errors import AirloopError
from airloop.runtime import tracking

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
#: parent-run tags copied onto the model version
LINEAGE_TAGS = (
    "airloop.git_commit",
    "airloop.data_version",
    "airloop.feature_views",
    "airloop.feature_service",
    "airloop.trigger",
    "airloop.model_family",
)


def run(spec, *, run_id: str, settings) -> dict[str, Any]:
    """Register the model trained by DAG run ``run_id`` and alias it ``challenger``.

    Output: ``{"model": name, "version": "N", "created": bool, "mlflow_run_id"}``.
    Raises :class:`AirloopError` when no finished train run exists for ``run_id``.
    """
    client = tracking.client(settings)
    name = spec.model_name
    train_run = tracking.require_train_run(client, spec, run_id)
    tags = train_run.data.tags
    model_uri = tags.get(tracking.TAG_MODEL_URI)
    if not model_uri:
        raise AirloopError(f"train run {train_run.info.run_id} has no logged model")
    metric_name = spec.metric.name
    metric_value = train_run.data.metrics.get(f"holdout_{metric_name}")

    tracking.ensure_registered_model(client, spec)
    version = tracking.model_version_for_run(client, name, run_id)
    created = version is None
    if created:
        version_tags = {
            tracking.TAG_DAG_RUN: run_id,
            "airloop.mlflow_run_id": train_run.info.run_id,
            "airloop.metric_name": metric_name,
            "airloop.metric_value": "" if metric_value is None else repr(float(metric_value)),
            **{k: tags[k] for k in LINEAGE_TAGS if k in tags},
        }
        version = client.create_model_version(
            name,
            source=model_uri,
            run_id=train_run.info.run_id,
            tags=version_tags,
            description=f"Trained by DAG run {run_id}",
            model_id=tags.get("airloop.model_id") or None,
        )
        log.info("register: %s version %s created", name, version.version)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return {
        "model": name,
        "version": str(version.version),
        "created": created,
        "mlflow_run_id": train_run.info.run_id,
    }
