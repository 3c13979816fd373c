"""Offline Kubernetes validation for the chart and deploy-step tests.

* :func:`render_chart` renders ``helm/airloop`` in-process with helm-python-sdk (Helm's
  Go SDK behind a C ABI; no binary, no cluster) and returns the parsed objects.
* :func:`validate_object` validates one object: built-in kinds with
  kubernetes-validate (strict, i.e. unknown fields rejected) for :data:`KUBE_VERSION`;
  custom resources against the published CRD schemas in ``/work/shared/crds``
  (``../shared/crds`` from the repository root) and ``tests/data/crds`` (CRDs kept with
  the tests, sources in its ``SOURCES.md``), made strict the way the API server's
  field validation is: an object schema that lists properties and neither declares
  ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields`` rejects
  unknown fields.
* :func:`container_problems` lists restricted-profile and resource violations.

The CRD part needs only jsonschema and PyYAML, so the runtime tier reuses it too (the
deploy step's fake Kubernetes API server validates what it is sent with
:func:`validate_custom`).
"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
#: Directories searched for ``<group>_<plural>.yaml`` CRD files, in this order.
CRD_DIRS = (SHARED / "crds", REPO / "tests" / "data" / "crds")
CHART = REPO / "helm" / "airloop"
KUBE_VERSION = "1.37.0"
RELEASE, NAMESPACE = "airloop", "airloop-system"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def render_chart(
    values: dict[str, Any] | None = None,
    show_only: list[str] | None = None,
    *,
    airflow: bool = False,
    name: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[dict[str, Any]]:
    """Render the chart and return its objects (``show_only``: template paths such as
    ``templates/mlflow/mlflow-deployment.yaml``). The Airflow dependency cannot be
    downloaded here, so it is disabled unless ``airflow=True``; its values are
    validated separately against the official chart's schema. Rendering applies
    ``values.schema.json`` and ``check-values.yaml`` (errors raise ``HelmError``)."""
    import helm_python as helm

    values = copy.deepcopy(values or {})
    if not airflow:
        values.setdefault("airflow", {})["enabled"] = False
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.merge_values(values))
        rendered = chart.render(values, name=name, namespace=namespace, is_install=True)
    objects = []
    for path, text in sorted(rendered.items()):
        rel = path.split("/", 1)[1]
        if show_only and rel not in show_only:
            continue
        if not path.endswith((".yaml", ".yml")):
            continue
        try:
            docs = list(yaml.load_all(text, Loader=_UniqueKeyLoader))
        except yaml.YAMLError as exc:
            raise ValueError(f"{rel}: {exc}") from exc
        for doc in docs:
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                doc["metadata"]["annotations"].setdefault("airloop.test/template", rel)
                objects.append(doc)
    return objects


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe loader that rejects a mapping key given twice (PyYAML keeps the last one
    silently; Kubernetes' strict field validation reports it as a duplicate field)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _strip_test_annotation(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    ann = obj.get("metadata", {}).get("annotations", {})
    ann.pop("airloop.test/template", None)
    if not ann and "annotations" in obj.get("metadata", {}):
        del obj["metadata"]["annotations"]
    return obj


# -- custom resources -----------------------------------------------------------------
def _strict(node: Any) -> Any:
    """Copy of an OpenAPI v3 schema with unknown fields rejected and ``nullable`` honored."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def _file_crds(path: Path) -> tuple[dict[str, Any], ...]:
    return tuple(
        crd for crd in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader)
        if crd and crd.get("kind") == "CustomResourceDefinition"
    )


def crds(group: str) -> list[dict[str, Any]]:
    """The CustomResourceDefinitions of one API group kept in :data:`CRD_DIRS` (parsed
    once per file; a fake API server serves discovery from them)."""
    return [crd for path in crd_files(group) for crd in _file_crds(path)]


@cache
def _file_schemas(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for crd in _file_crds(path):
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                schemas[(f"{group}/{version['name']}", kind)] = _strict(
                    version["schema"]["openAPIV3Schema"]
                )
    return schemas


def crd_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    """Strict schema of a custom resource, or None if no CRD of that group is kept.

    CRD files are named ``<group>_<plural>.yaml``; only the group's files are parsed
    (the big ones take seconds)."""
    group = api_version.split("/")[0]
    if "." not in group:
        return None
    for path in crd_files(group):
        schema = _file_schemas(path).get((api_version, kind))
        if schema is not None:
            return schema
    return None


def crd_files(group: str) -> list[Path]:
    """CRD files of one API group in every directory of :data:`CRD_DIRS`."""
    return [path for d in CRD_DIRS for path in sorted(d.glob(f"{group}_*.yaml"))]


def is_custom(obj: dict[str, Any]) -> bool:
    group = obj["apiVersion"].split("/")[0]
    return "." in group and not group.endswith("k8s.io") and bool(crd_files(group))


def validate_custom(obj: dict[str, Any]) -> None:
    schema = crd_schema(obj["apiVersion"], obj["kind"])
    if schema is None:
        raise LookupError(
            f"no CRD schema for {obj['apiVersion']} {obj['kind']} in "
            + " or ".join(str(d) for d in CRD_DIRS)
        )
    _validate_metadata(obj)
    jsonschema.Draft7Validator(schema).validate(obj)


def _validate_metadata(obj: dict[str, Any]) -> None:
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    if not (name and len(name) <= 253 and DNS_SUBDOMAIN.match(name)):
        raise ValueError(f"{obj['kind']}: invalid metadata.name {name!r}")
    for field in ("labels", "annotations"):
        for k, v in (meta.get(field) or {}).items():
            if not isinstance(v, str):
                raise ValueError(f"{obj['kind']}/{name}: {field}.{k} must be a string, got {v!r}")


# -- built-in kinds ---------------------------------------------------------------------
def validate_builtin(obj: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def validate_object(obj: dict[str, Any]) -> None:
    """Validate one object (built-in or custom); raises on the first problem."""
    obj = _strip_test_annotation(obj)
    if is_custom(obj):
        validate_custom(obj)
    else:
        _validate_metadata(obj)
        validate_builtin(obj)


# -- pods ------------------------------------------------------------------------------
def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pod spec inside an object (workloads, RayCluster groups, Seldon Server)."""
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind == "Pod":
        return [spec]
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
        return [spec["template"]["spec"]]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if kind == "RayCluster":
        groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
        return [g["template"]["spec"] for g in groups]
    if kind == "Server" and "podSpec" in spec:
        return [spec["podSpec"]]
    return []


def container_problems(pod: dict[str, Any], owner: str) -> list[str]:
    """Restricted Pod Security Standard + requests/limits, per container."""
    problems = []
    pod_sc = pod.get("securityContext", {})
    for c in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        where = f"{owner} container {c.get('name')}"
        sc = c.get("securityContext", {})
        if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True):
            problems.append(f"{where}: runAsNonRoot not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{where}: runAsUser 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation not false")
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if "ALL" not in (sc.get("capabilities", {}).get("drop") or []):
            problems.append(f"{where}: capabilities.drop lacks ALL")
        if set(sc.get("capabilities", {}).get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: adds capabilities")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in {"RuntimeDefault", "Localhost"}:
            problems.append(f"{where}: seccompProfile {seccomp!r}")
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(part) or {}):
                    problems.append(f"{where}: no {part}.{r}")
    for vol in pod.get("volumes", []):
        if "hostPath" in vol:
            problems.append(f"{owner}: hostPath volume {vol.get('name')}")
    return problems
