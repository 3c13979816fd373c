"""Every Kubernetes object of a step pod, built in this one module.

A step runs in the tenant's namespace (``airloop-<tenant>``, :mod:`airloop.core.naming`) under the ``airloop-step``
service account, with the resources of its project spec, configuration from the
``airloop-runtime-env`` ConfigMap and ``airloop-runtime-secrets`` Secret (created by the
Helm chart per tenant namespace), and a security context that satisfies the
``restricted`` Pod Security Standard on the pod and on every container, including the
XCom sidecar the provider adds to read ``/airflow/xcom/return.json``.

Imported only in ``kubernetes`` mode (it pulls in the Kubernetes client).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import PodDefaults
from airloop.core.naming import label, tenant_namespace
from kubernetes.client import models as k8s

if TYPE_CHECKING:
    from airloop.core.settings import Settings
    from airloop.core.spec import ProjectSpec

SERVICE_ACCOUNT = "airloop-step"
RUNTIME_CONFIGMAP = "airloop-runtime-env"
RUNTIME_SECRET = "airloop-runtime-secrets"
#: The runtime image's numeric non-root user (docker/runtime.Dockerfile).
RUN_AS_USER = 10001
STARTUP_TIMEOUT_SECONDS = 600
SIDECAR_CONTAINER_NAME = PodDefaults.SIDECAR_CONTAINER_NAME
#: The sidecar only sleeps until the operator has read the result file.
SIDECAR_RESOURCES = {
    "requests": {"cpu": "10m", "memory": "16Mi"},
    "limits": {"cpu": "50m", "memory": "32Mi"},
}


def labels(spec: ProjectSpec, step: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "airloop-step",
        "app.kubernetes.io/part-of": "airloop",
        "app.kubernetes.io/component": step.replace("_", "-"),
        label("tenant"): spec.tenant,
        label("project"): spec.name,
        label("step"): step,
    }


def pod_name(spec: ProjectSpec, step: str) -> str:
    """DNS-1123 base name; the operator appends a random suffix."""
    return f"{spec.tenant}-{spec.name}-{step}".replace("_", "-")[:50].rstrip("-")


def container_resources(spec: ProjectSpec, step: str) -> k8s.V1ResourceRequirements:
    res = spec.step_resources(step)
    return k8s.V1ResourceRequirements(
        requests={"cpu": res["cpu"], "memory": res["memory"]},
        limits={"cpu": res["cpu_limit"], "memory": res["memory_limit"]},
    )


def sidecar_resources() -> k8s.V1ResourceRequirements:
    return k8s.V1ResourceRequirements(
        requests=dict(SIDECAR_RESOURCES["requests"]), limits=dict(SIDECAR_RESOURCES["limits"])
    )


def pod_security_context() -> k8s.V1PodSecurityContext:
    """Pod level of the ``restricted`` Pod Security Standard."""
    return k8s.V1PodSecurityContext(
        run_as_non_root=True,
        run_as_user=RUN_AS_USER,
        run_as_group=RUN_AS_USER,
        fs_group=RUN_AS_USER,
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def container_security_context() -> k8s.V1SecurityContext:
    """Container level of the ``restricted`` Pod Security Standard (every container)."""
    return k8s.V1SecurityContext(
        run_as_non_root=True,
        run_as_user=RUN_AS_USER,
        run_as_group=RUN_AS_USER,
        allow_privilege_escalation=False,
        privileged=False,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def env_from() -> list[k8s.V1EnvFromSource]:
    return [
        k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name=RUNTIME_CONFIGMAP)),
        k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=RUNTIME_SECRET)),
    ]


class AirloopPodOperator(KubernetesPodOperator):
    """A ``KubernetesPodOperator`` whose XCom sidecar also gets resources.

    Provider 10.25 takes the sidecar's security context as an operator argument
    (``xcom_sidecar_container_security_context``) but its resources only from the
    Kubernetes connection extra ``xcom_sidecar_container_resources``; without that
    extra the sidecar has requests and no limits, which a tenant ``ResourceQuota`` on
    limits rejects. When the connection sets none, airloop's defaults apply.
    """

    def build_pod_request_obj(self, context=None, *, dry_run: bool = False) -> k8s.V1Pod:
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        if self.do_xcom_push and not self.hook.get_xcom_sidecar_container_resources():
            for container in pod.spec.containers:
                if container.name == SIDECAR_CONTAINER_NAME:
                    container.resources = sidecar_resources()
        return pod


def pod_operator(
    spec: ProjectSpec, step: str, settings: Settings, *, task_id: str, arguments: list[str],
    **kwargs: Any,
) -> AirloopPodOperator:
    """The pod that runs ``airloop <arguments>`` for ``step`` of ``spec``'s project
    (image and namespace prefix from ``settings``: ``AIRLOOP_RUNTIME_IMAGE``,
    ``AIRLOOP_NAMESPACE_PREFIX``)."""
    options: dict[str, Any] = {
        "image": settings.runtime_image,
        "cmds": ["airloop"],
        "arguments": arguments,
        "name": pod_name(spec, step),
        "namespace": tenant_namespace(spec.tenant, settings.namespace_prefix),
        "service_account_name": SERVICE_ACCOUNT,
        "labels": labels(spec, step),
        "container_resources": container_resources(spec, step),
        "env_from": env_from(),
        "security_context": pod_security_context(),
        "container_security_context": container_security_context(),
        "xcom_sidecar_container_security_context": container_security_context(),
        "do_xcom_push": True,
        "get_logs": True,
        "log_events_on_failure": True,
        "on_finish_action": "delete_succeeded_pod",
        "startup_timeout_seconds": STARTUP_TIMEOUT_SECONDS,
        "image_pull_policy": "IfNotPresent",
    }
    options.update(kwargs)
    return AirloopPodOperator(task_id=task_id, **options)
