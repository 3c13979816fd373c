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

The deploy step hands over one :class:`ServingRequest` (integer version, an object-store
URI the cluster can pull — see :func:`storage_uri` — and the champion it replaces).
:func:`build_resources` is pure (dicts in, dicts out); :func:`apply` sends them with the
official client's dynamic server-side apply (``PATCH`` with
``application/apply-patch+yaml``, field manager ``airloop``), which is idempotent:
applying the same objects twice changes nothing.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError
from urllib3.exceptions import HTTPError as TransportError

from airloop.core.errors import AirloopError
from airloop.core.naming import label, tenant_namespace
from airloop.core.settings import env_name

FIELD_MANAGER = "airloop"
TARGETS = ("seldon", "kserve")
#: Seconds to wait for the API server's answer to one apply.
API_TIMEOUT = 30
#: Schemes both KServe's storage initializer and Seldon Core 2's rclone agent pull from
#: an object store with the credentials the chart configures.
PULLABLE_SCHEMES = ("s3", "gs")
#: MLflow's proxied-artifact scheme: a path under the server's --artifacts-destination.
MLFLOW_ARTIFACTS = "mlflow-artifacts"


def _pullable(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme in PULLABLE_SCHEMES and bool(parts.netloc)


def storage_uri(download_uri: str, artifacts_root: str | None) -> str:
    """The object-store URI a cluster pulls for a model version's download URI.

    ``download_uri`` is what the registry returns
    (``MlflowClient.get_model_version_download_uri``). An MLflow server that proxies
    artifacts returns ``mlflow-artifacts:/<path>``, which only the MLflow server can
    resolve; it is ``<path>`` under the server's ``--artifacts-destination``, given here
    as ``artifacts_root`` (``AIRLOOP_MLFLOW_ARTIFACTS_URI``). Raises one
    :class:`AirloopError` line naming that setting when no pullable URI results.
    """
    setting = env_name("mlflow_artifacts_uri")
    uri = download_uri
    if urlsplit(download_uri).scheme == MLFLOW_ARTIFACTS:
        if not artifacts_root:
            raise AirloopError(
                f"model artifacts {download_uri} are proxied by the MLflow server, which a "
                f"cluster cannot pull from: set {setting} to the server's "
                "--artifacts-destination (e.g. s3://bucket/prefix)"
            )
        uri = f"{artifacts_root.rstrip('/')}/{urlsplit(download_uri).path.lstrip('/')}"
    if not _pullable(uri):
        schemes = ", ".join(f"{s}://" for s in PULLABLE_SCHEMES)
        raise AirloopError(
            f"model artifacts {uri} cannot be pulled by a cluster (expected {schemes}): "
            f"check {setting} (now {artifacts_root!r}) and the MLflow artifact store"
        )
    return uri


@dataclass(frozen=True)
class ServingRequest:
    """What the deploy step hands to a Kubernetes target.

    ``version``: the registered model version; ``model_uri``: its artifacts as a URI the
    cluster pulls (:func:`storage_uri`); ``previous_version``: the current champion being
    replaced (None: none, or the same version), the other side of a canary split.
    """

    version: int
    model_uri: str
    previous_version: int | None = None

    def __post_init__(self) -> None:
        versions = {"version": self.version, "previous_version": self.previous_version}
        for name, value in versions.items():
            if value is None and name == "previous_version":
                continue  # no champion yet
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise AirloopError(f"{name} must be a positive integer, got {value!r}")
        if not _pullable(self.model_uri):
            raise AirloopError(
                f"model_uri {self.model_uri!r} is not a storage URI a cluster can pull"
            )


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
        raise AirloopError(
            f"{spec.name}: model version must be a positive integer, got {version!r}"
        )
    if not model_uri or not _pullable(model_uri):
        raise AirloopError(
            f"{spec.name}: model_uri {model_uri!r} is not a storage URI a cluster can pull "
            f"({', '.join(f'{s}://' for s in PULLABLE_SCHEMES)})"
        )
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
    version, its artifact URI (``s3://…`` or ``gs://…``, see :func:`storage_uri`),
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
    split = 0 < canary < 100 and previous_version not in (None, version)
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
        if split:
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
    if split:
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


def _api_client(settings) -> k8s_client.ApiClient:
    """A client for the cluster: ``settings.kubeconfig`` (``KUBECONFIG``) when set, else
    the pod's in-cluster ServiceAccount, else the default kubeconfig."""
    cfg = k8s_client.Configuration()
    try:
        if settings.kubeconfig:
            k8s_config.load_kube_config(str(settings.kubeconfig), client_configuration=cfg)
        else:
            try:
                k8s_config.load_incluster_config(client_configuration=cfg)
            except k8s_config.ConfigException:
                k8s_config.load_kube_config(client_configuration=cfg)
    except (k8s_config.ConfigException, OSError) as exc:
        raise AirloopError(
            f"no Kubernetes credentials (in-cluster or kubeconfig): {_line(exc)}"
        ) from None
    return k8s_client.ApiClient(cfg)


def _line(value: Any) -> str:
    """``value`` as one line (the step's error contract is one line)."""
    return " ".join(str(getattr(value, "reason", None) or value).split())


def _api_message(exc: DynamicApiError) -> str:
    """The API server's ``Status.message`` (else its reason)."""
    try:
        message = json.loads(exc.body).get("message")
    except (TypeError, ValueError, AttributeError):
        message = None
    return " ".join(str(message or exc.reason or "").split())


def apply(resources: list[dict[str, Any]], *, api_client: k8s_client.ApiClient) -> list[dict]:
    """Server-side apply every object (field manager ``airloop``, conflicts forced).

    Uses the official client's :class:`~kubernetes.dynamic.DynamicClient`: discovery
    finds each kind's REST path (a kind the cluster does not serve is an error naming
    its CRD), ``server_side_apply`` sends the full desired object, so a second apply of
    the same objects is a no-op on the server. Returns the server's answers. Raises
    :class:`AirloopError` naming the object and the API's message on failure.
    """
    with tempfile.TemporaryDirectory(prefix="airloop-discovery-") as cache:
        # a private discovery cache: nothing stale from another cluster or run
        host = api_client.configuration.host
        try:
            dynamic = DynamicClient(api_client, cache_file=str(Path(cache) / "discovery.json"))
        except DynamicApiError as exc:
            raise AirloopError(
                f"Kubernetes API {host}: discovery failed: HTTP {exc.status} {_api_message(exc)}"
            ) from None
        except (TransportError, OSError, ValueError) as exc:
            raise AirloopError(f"Kubernetes API {host} is unreachable: {_line(exc)}") from None
        applied = []
        for obj in resources:
            meta = obj["metadata"]
            what = f"{obj['kind']} {meta['namespace']}/{meta['name']}"
            try:
                api = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            except ResourceNotFoundError:
                raise AirloopError(
                    f"apply {what} failed: the cluster does not serve {obj['kind']} "
                    f"({obj['apiVersion']}); is its CRD installed?"
                ) from None
            try:
                answer = api.server_side_apply(
                    body=obj, namespace=meta["namespace"], field_manager=FIELD_MANAGER,
                    force_conflicts=True, _request_timeout=API_TIMEOUT,
                )
            except DynamicApiError as exc:
                raise AirloopError(
                    f"apply {what} failed: HTTP {exc.status} {_api_message(exc)}"
                ) from None
            except (TransportError, OSError) as exc:
                raise AirloopError(
                    f"apply {what} failed: {host} is unreachable: {_line(exc)}"
                ) from None
            applied.append(answer.to_dict())
    return applied


def deploy(
    spec, request: ServingRequest, *, settings, api_client: k8s_client.ApiClient | None = None
) -> dict[str, Any]:
    """Build and apply the serving resources of ``request`` (deploy step, ``seldon``/``kserve``).

    Inputs: project spec, the :class:`ServingRequest`, settings (options from
    :func:`options_from_settings`, credentials from :func:`_api_client` unless
    ``api_client`` is given). Output: a small JSON-able result (target, namespace,
    version, model URI, endpoint name, canary share, previous version, applied objects).
    Idempotent: server-side apply of the same inputs changes nothing.
    """
    options = options_from_settings(settings)
    resources = build_resources(
        spec, request.version, request.model_uri, settings, options=options,
        previous_version=request.previous_version,
    )
    own = api_client is None
    api = _api_client(settings) if own else api_client
    try:
        apply(resources, api_client=api)
    finally:
        if own:
            api.close()
    canary = spec.deployment.canary_traffic
    split = 0 < canary < 100 and request.previous_version not in (None, request.version)
    return {
        "target": spec.deployment.target,
        "namespace": namespace_for(spec, options),
        "version": str(request.version),
        "model_uri": request.model_uri,
        "endpoint": spec.serving_name,
        "canary_traffic": canary if split else 100,
        "previous_version": str(request.previous_version) if split else None,
        "applied": [f"{o['kind']}/{o['metadata']['name']}" for o in resources],
    }
