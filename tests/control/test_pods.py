"""Kubernetes mode, offline: every step task's pod is rendered with the real
``KubernetesPodOperator.build_pod_request_obj(dry_run=True)``.

There is no Kubernetes API server on this machine; none is contacted. The operator
reads its ``kubernetes_default`` connection for XCom-sidecar overrides, so the test
defines that connection through an ``AIRFLOW_CONN_`` environment variable (no DB).
Each pod must run the same argv as the local operator, carry airloop's labels,
namespace and resources, satisfy the ``restricted`` Pod Security Standard on every
container including the XCom sidecar, and validate strictly against the Kubernetes
OpenAPI schema of the newest version ``kubernetes-validate`` ships.
"""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
from conftest import REPO
from kubernetes.client import ApiClient

from airloop.core.spec import load_all

SPECS = {s.name: s for s in load_all(REPO / "include" / "projects")}
RUN_ID = "manual__2025-01-02T03:04:05+00:00"
PARAMS = {"trigger": "api", "reason": None}
SIDECAR = "airflow-xcom-sidecar"
ALLOWED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}


def restricted_violations(pod: dict) -> list[str]:
    """Violations of the ``restricted`` Pod Security Standard (v1.3x), as messages."""
    spec = pod["spec"]
    psc = spec.get("securityContext") or {}
    out = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            out.append(f"spec.{flag}")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            out.append(f"volume {volume['name']}: {sorted(kinds)}")
    if (psc.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append("pod seccompProfile Unconfined")
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: adds capabilities {caps['add']}")
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            out.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        if not (c.get("resources") or {}).get("limits"):
            out.append(f"{name}: no resource limits")  # airloop's rule: quotas need limits
    return out


def _step_tasks(bag):
    for dag_id, dag in sorted(bag.dags.items()):
        for task in dag.tasks:
            if hasattr(task, "arguments") and task.task_type != "TriggerDagRunOperator":
                yield dag_id, task


def _rendered(task):
    task = copy.deepcopy(task)
    task.render_template_fields({"run_id": RUN_ID, "params": dict(PARAMS)})
    return task


@pytest.fixture(scope="module")
def pods(k8s_bag, local_bag):
    """{(dag_id, task_id): (pod dict, local argv)} for every step task."""
    import os

    os.environ["AIRFLOW_CONN_KUBERNETES_DEFAULT"] = '{"conn_type": "kubernetes", "extra": {}}'
    try:
        local_tasks = {(d, t.task_id): t for d, t in _step_tasks(local_bag[0])}
        out = {}
        for dag_id, task in _step_tasks(k8s_bag[0]):
            pod = _rendered(task).build_pod_request_obj(dry_run=True)
            local = _rendered(local_tasks[(dag_id, task.task_id)])
            out[(dag_id, task.task_id)] = (ApiClient().sanitize_for_serialization(pod), local)
        assert set(out) == set(local_tasks)
        return out
    finally:
        os.environ.pop("AIRFLOW_CONN_KUBERNETES_DEFAULT", None)


def test_every_step_task_has_a_pod(pods):
    steps = {task_id for _, task_id in pods}
    assert steps == {
        "ingest", "materialize", "train", "register", "gate", "deploy", "promote",
        "monitor", "batch_predict",
    }


def test_pod_argv_equals_local_argv(pods):
    for (dag_id, task_id), (pod, local) in pods.items():
        main = pod["spec"]["containers"][0]
        pod_argv = main["command"] + main["args"]
        local_argv = local.argv()
        assert Path(local_argv[0]).name == pod_argv[0] == "airloop"
        assert pod_argv[1:] == local_argv[1:], (dag_id, task_id)
        project = dag_id.split("__")[0]
        assert pod_argv[1:6] == [task_id, "--project", project, "--run-id", RUN_ID]
    train = pods[("churn__train", "train")][0]["spec"]["containers"][0]["args"]
    assert train[-2:] == ["--trigger", "api"]


def test_pod_identity_labels_namespace_resources(pods):
    for (dag_id, task_id), (pod, _) in pods.items():
        spec = SPECS[dag_id.split("__")[0]]
        meta = pod["metadata"]
        assert meta["namespace"] == f"airloop-{spec.tenant}"
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "airloop-step"
        assert labels["app.kubernetes.io/part-of"] == "airloop"
        assert labels["airloop.io/tenant"] == spec.tenant
        assert labels["airloop.io/project"] == spec.name
        assert labels["airloop.io/step"] == task_id
        assert pod["spec"]["serviceAccountName"] == "airloop-step"
        assert pod["spec"]["restartPolicy"] == "Never"
        main, sidecar = pod["spec"]["containers"]
        assert main["image"] == "ghcr.io/airloop/runtime:0.1.0"
        res = spec.step_resources(task_id)
        assert main["resources"] == {
            "requests": {"cpu": res["cpu"], "memory": res["memory"]},
            "limits": {"cpu": res["cpu_limit"], "memory": res["memory_limit"]},
        }
        assert main["envFrom"] == [
            {"configMapRef": {"name": "airloop-runtime-env"}},
            {"secretRef": {"name": "airloop-runtime-secrets"}},
        ]
        assert {"mountPath": "/airflow/xcom", "name": "xcom"} in main["volumeMounts"]
        assert sidecar["name"] == SIDECAR
        assert sidecar["resources"]["limits"] and sidecar["resources"]["requests"]


def test_pod_operator_settings(k8s_bag):
    bag, _ = k8s_bag
    for _, task in _step_tasks(bag):
        assert task.do_xcom_push is True
        assert task.get_logs is True
        assert task.on_finish_action.value == "delete_succeeded_pod"
        assert task.startup_timeout_seconds >= 120
        assert task.retries >= 1


def test_every_container_is_restricted(pods):
    for key, (pod, _) in pods.items():
        assert [c["name"] for c in pod["spec"]["containers"]] == ["base", SIDECAR]
        assert restricted_violations(pod) == [], key
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        for c in pod["spec"]["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_restricted_check_catches_a_weak_sidecar(pods):
    pod = copy.deepcopy(next(iter(pods.values()))[0])
    sidecar = pod["spec"]["containers"][1]
    del sidecar["securityContext"]
    del pod["spec"]["securityContext"]["runAsNonRoot"]
    sidecar["resources"].pop("limits")
    found = restricted_violations(pod)
    assert f"{SIDECAR}: capabilities must drop ALL" in found
    assert f"{SIDECAR}: allowPrivilegeEscalation must be false" in found
    assert f"{SIDECAR}: runAsNonRoot must be true" in found
    assert f"{SIDECAR}: no resource limits" in found


def test_pods_validate_strictly_against_kubernetes_schema(pods):
    version = kubernetes_validate.latest_version()
    for key, (pod, _) in pods.items():
        kubernetes_validate.validate(pod, version, strict=True)
    broken = copy.deepcopy(next(iter(pods.values()))[0])
    broken["spec"]["containers"][0]["argz"] = ["typo"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_image_and_namespace_prefix_come_from_env():
    from airloop.core.settings import load
    from airloop_ops import factory

    settings = load({"AIRLOOP_MODE": "kubernetes",
                     "AIRLOOP_RUNTIME_IMAGE": "registry.example/airloop/runtime:9.9",
                     "AIRLOOP_NAMESPACE_PREFIX": "ml-"})
    op = factory.step_operator(SPECS["churn"], "gate", settings, task_id="gate_probe")
    assert op.image == "registry.example/airloop/runtime:9.9"
    assert op.namespace == "ml-demo"
    assert op.arguments == ["gate", "--project", "churn", "--run-id", "{{ run_id }}"]


def test_unknown_mode_and_step_are_clear_errors():
    from airloop.core.errors import AirloopError
    from airloop.core.settings import load
    from airloop_ops import factory

    with pytest.raises(AirloopError, match="AIRLOOP_MODE='docker'"):
        load({"AIRLOOP_MODE": "docker"})
    with pytest.raises(AirloopError, match="unknown step 'fit'"):
        factory.step_operator(SPECS["churn"], "fit", load({"AIRLOOP_MODE": "local"}))
