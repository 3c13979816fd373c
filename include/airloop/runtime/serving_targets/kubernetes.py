"""Serving resources for a registered model version, applied with server-side apply.

Two targets, both serving the Open Inference Protocol (V2) with MLServer's MLflow
runtime:

* ``seldon`` — Seldon Core 2: one ``Model`` per registered version
  (``<serving-name>-v<version>``, scheduled on the chart's MLServer ``Server`` via the
  ``mlflow`` capability) and an ``Experiment`` named ``<serving-name>`` that splits
  traffic between the current champion and the new version when
  ``deployment.canary_traffic`` is between 1 and 99 and a previous version is known.
* ``kserve`` — one ``InferenceService`` ``<serving-name>`` (``modelFormat: mlflow``,
  ``protocolVersion: v2``); a canary is KServe's own ``canaryTrafficPercent``: the new
  ``storageUri`` gets that share, the previous revision the rest.

:func:`build_resources` is pure (dicts in, dicts out); :func:`apply` sends them with
server-side apply (``PATCH`` with ``application/apply-patch+yaml``, field manager
``airloop``), which is idempotent: applying the same objects twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airloop.core.errors import AirloopError
from airloop.core.naming import label, tenant_namespace

FIELD_MANAGER = "airloop"
TARGETS = ("seldon", "kserve")

#: (group, version, plural) of every kind built here; "" is the core API group.
KINDS: dict[str, tuple[str, str, str]] = {
    "Model": ("mlops.seldon.io", "v1alpha1", "models"),
    "Experiment": ("mlops.seldon.io", "v1alpha1", "experiments"),
    "InferenceService": ("serving.kserve.io", "v1beta1", "inferenceservices"),
}


@dataclass(frozen=True)
class ServingOptions:
    """Cluster-side choices that are not part of a project spec.

    ``namespace`` defaults to the tenant namespace ``airloop-<tenant>`` (the Helm
    chart creates it); ``seldon_server`` is the chart's Seldon Core 2 ``Server``.
    Object-store credentials for the model download differ per target:

    * ``storage_secret`` (``serving.storageSecret.seldon``) becomes the Seldon ``Model``'s
      ``spec.secretName``: a Secret in the Model's namespace with exactly one key, an
      rclone remote config named after the storage URI scheme (``s3``);
    * ``service_account`` (the chart's ``airloop-model``, no API access) is the KServe
      predictor's ServiceAccount; KServe's storage initializer takes the credentials
      from the Secret listed on it (``serving.storageSecret.kserve``).
    """

    namespace: str | None = None
    seldon_server: str = "airloop-mlserver"
    service_account: str = "airloop-model"
    storage_secret: str | None = None
    #: the serving target the cluster was installed for (chart ``serving.target``);
    #: None: not known (any target is built)
    cluster_target: str | None = None


def options_from_settings(settings) -> ServingOptions:
    """Options from the settings the chart's ``airloop-runtime-env`` ConfigMap sets
    (``AIRLOOP_NAMESPACE``, ``AIRLOOP_SELDON_SERVER``, ``AIRLOOP_SERVICE_ACCOUNT``,
    ``AIRLOOP_STORAGE_SECRET``, ``AIRLOOP_SERVING_TARGET``)."""
    return ServingOptions(
        namespace=settings.namespace,
        seldon_server=settings.seldon_server,
        service_account=settings.service_account,
        storage_secret=settings.storage_secret,
        cluster_target=settings.serving_target,
    )


def namespace_for(spec, options: ServingOptions) -> str:
    return options.namespace or tenant_namespace(spec.tenant)


def _labels(spec, version: int) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": spec.serving_name,
        "app.kubernetes.io/part-of": "airloop",
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
        label("tenant"): spec.tenant,
        label("project"): spec.name,
        label("model-version"): str(version),
    }


def _check(spec, version: int, model_uri: str) -> dict[str, Any]:
    deployment = spec.deployment
    target = deployment.target
    if target not in TARGETS:
        raise AirloopError(
            f"{spec.name}: deployment.target={target!r} has no Kubernetes resources "
            f"(expected one of {', '.join(TARGETS)})"
        )
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise AirloopError(f"{spec.name}: model version must be a positive integer, got {version!r}")
    if not model_uri or "://" not in model_uri:
        raise AirloopError(f"{spec.name}: model_uri {model_uri!r} is not a storage URI")
    return deployment


def seldon_model_name(spec, version: int) -> str:
    return f"{spec.serving_name}-v{version}"


def build_resources(
    spec,
    version: int,
    model_uri: str,
    settings=None,
    *,
    options: ServingOptions | None = None,
    previous_version: int | None = None,
) -> list[dict[str, Any]]:
    """Kubernetes objects that serve ``version`` of ``spec``'s model (pure function).

    Inputs: a validated project spec (``deployment`` section), the registered model
    version, its artifact URI (``s3://…`` or ``models:/…`` resolved by the caller),
    the settings (unused today; kept so callers need not change when settings grow)
    and the champion version being replaced (``previous_version``) for a canary.
    Output: a list of manifests, deterministic for the same inputs.
    """
    del settings  # the builder depends only on the spec and the options
    options = options or ServingOptions()
    deployment = _check(spec, version, model_uri)
    if options.cluster_target and deployment.target != options.cluster_target:
        raise AirloopError(
            f"{spec.name}: deployment.target={deployment.target!r} but this cluster serves "
            f"with {options.cluster_target!r} (Helm value serving.target): set the project's "
            f"deployment.target to {options.cluster_target!r}"
        )
    namespace = namespace_for(spec, options)
    canary = deployment.canary_traffic
    min_replicas, max_replicas = deployment.min_replicas, deployment.max_replicas
    labels = _labels(spec, version)

    if deployment.target == "kserve":
        predictor: dict[str, Any] = {
            "serviceAccountName": options.service_account,
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "model": {
                "modelFormat": {"name": "mlflow"},
                "protocolVersion": "v2",
                "runtime": "kserve-mlserver",
                "storageUri": model_uri,
                "resources": {
                    "requests": {"cpu": "100m", "memory": "512Mi"},
                    "limits": {"cpu": "1", "memory": "1Gi"},
                },
            },
        }
        if 0 < canary < 100 and previous_version is not None:
            predictor["canaryTrafficPercent"] = canary
        return [
            {
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "metadata": {
                    "name": spec.serving_name,
                    "namespace": namespace,
                    "labels": labels,
                    "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"},
                },
                "spec": {"predictor": predictor},
            }
        ]

    new_name = seldon_model_name(spec, version)
    model_spec: dict[str, Any] = {
        "storageUri": model_uri,
        "requirements": ["mlflow"],
        "server": options.seldon_server,
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "replicas": min_replicas,
    }
    if options.storage_secret:
        model_spec["secretName"] = options.storage_secret
    resources: list[dict[str, Any]] = [
        {
            "apiVersion": "mlops.seldon.io/v1alpha1",
            "kind": "Model",
            "metadata": {"name": new_name, "namespace": namespace, "labels": labels},
            "spec": model_spec,
        }
    ]
    # The experiment is the stable entry point `<serving-name>`; without a canary the
    # new version takes all traffic (full promotion).
    if 0 < canary < 100 and previous_version is not None and previous_version != version:
        candidates = [
            {"name": seldon_model_name(spec, previous_version), "weight": 100 - canary},
            {"name": new_name, "weight": canary},
        ]
        default = seldon_model_name(spec, previous_version)
    else:
        candidates = [{"name": new_name, "weight": 100}]
        default = new_name
    resources.append(
        {
            "apiVersion": "mlops.seldon.io/v1alpha1",
            "kind": "Experiment",
            "metadata": {"name": spec.serving_name, "namespace": namespace, "labels": labels},
            "spec": {"default": default, "resourceType": "model", "candidates": candidates},
        }
    )
    return resources


def resource_path(obj: dict[str, Any]) -> str:
    """REST path of one object (namespaced kinds only)."""
    kind = obj["kind"]
    if kind not in KINDS:
        raise AirloopError(f"cannot apply kind {kind!r}: not a serving resource")
    group, version, plural = KINDS[kind]
    meta = obj["metadata"]
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    return f"{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"


def _api_client():
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise AirloopError(f"no Kubernetes credentials (in-cluster or kubeconfig): {exc}") from exc
    return client.ApiClient()


def apply(resources: list[dict[str, Any]], *, api_client=None) -> list[dict[str, Any]]:
    """Server-side apply every object (field manager ``airloop``, ``force=true``).

    Idempotent: the request body is the full desired object, so a second apply of the
    same objects is a no-op on the server. Returns the server's answers. Raises
    :class:`AirloopError` with the object and the API's message on failure.
    """
    from kubernetes.client.exceptions import ApiException

    api = api_client or _api_client()
    applied = []
    for obj in resources:
        path = resource_path(obj)
        try:
            answer = api.call_api(
                path,
                "PATCH",
                query_params=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                header_params={
                    "Content-Type": "application/apply-patch+yaml",
                    "Accept": "application/json",
                },
                body=obj,
                response_types_map={200: "object", 201: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
            )
        except ApiException as exc:
            raise AirloopError(
                f"apply {obj['kind']} {obj['metadata']['namespace']}/{obj['metadata']['name']} "
                f"failed: HTTP {exc.status} {exc.reason}"
            ) from exc
        applied.append(answer)
    return applied


def deploy(
    spec,
    *,
    version: int,
    model_uri: str,
    settings,
    previous_version: int | None = None,
    api_client=None,
) -> dict[str, Any]:
    """Build and apply the serving resources of ``version`` (deploy step, kubernetes mode).

    Inputs: project spec, registered model version and its artifact URI, settings;
    ``previous_version`` (the current champion) enables a canary split; options come
    from the settings (:func:`options_from_settings`). Output: a small JSON-able result
    (target, namespace, applied objects, canary share, inference endpoint name).
    Idempotent: server-side apply of the same inputs changes nothing.
    """
    options = options_from_settings(settings)
    resources = build_resources(
        spec, version, model_uri, settings, options=options, previous_version=previous_version
    )
    apply(resources, api_client=api_client)
    canary = spec.deployment.canary_traffic
    split = 0 < canary < 100 and previous_version not in (None, version)
    return {
        "target": spec.deployment.target,
        "namespace": namespace_for(spec, options),
        "model_version": version,
        "model_uri": model_uri,
        "endpoint": spec.serving_name,
        "canary_traffic": canary if split else 100,
        "previous_version": previous_version if split else None,
        "applied": [f"{o['kind']}/{o['metadata']['name']}" for o in resources],
    }
