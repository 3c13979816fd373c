"""The deploy step's Kubernetes targets (``seldon``, ``kserve``), through ``deploy.run``.

Real: the MLflow server on PostgreSQL (``mlflow_server``), model versions registered for
a DAG run id — by the register step itself from a logged model (its download URI is
``mlflow-artifacts:/…``, proxied by the server), or with an ``s3://`` source — and the
official Kubernetes client (credentials from a kubeconfig, discovery, server-side
apply).

Fake: the Kubernetes API server. There is no cluster on this machine, so
:class:`FakeApiServer` (a ``ThreadingHTTPServer`` on loopback) stands in for it. It
serves discovery for the CRDs it is given (``/work/shared/crds`` and
``tests/data/crds``, the published Seldon Core 2 and KServe schemas) and server-side
apply (``PATCH`` with ``application/apply-patch+yaml``), and it answers like the API
server: an object that fails its CRD's schema is rejected with 422 and a message
(``tests/control/chart_utils.py``'s strict validation), an unknown namespace is 404, a
denied patch 403, and an apply that changes nothing keeps the ``resourceVersion``.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import sys
import threading
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jsonschema
import mlflow
import pytest
import yaml
from sklearn.dummy import DummyClassifier

from helpers import PROJECTS

sys.path.append(str(Path(__file__).resolve().parents[1] / "control"))
from chart_utils import crds, validate_custom  # noqa: E402

from airloop.core import settings as config  # noqa: E402
from airloop.core.errors import AirloopError  # noqa: E402
from airloop.core.spec import parse_spec  # noqa: E402
from airloop.runtime import tracking  # noqa: E402
from airloop.runtime.serving_targets import kubernetes as k8s_serving  # noqa: E402
from airloop.runtime.steps import deploy, promote, register  # noqa: E402

#: What the chart passes to MLflow as --artifacts-destination (helm/airloop values.yaml).
ARTIFACTS_ROOT = "s3://airloop-mlflow/artifacts"
GROUPS = ("mlops.seldon.io", "serving.kserve.io")
SELDON, KSERVE = "/apis/mlops.seldon.io/v1alpha1", "/apis/serving.kserve.io/v1beta1"


# -- the fake API server ------------------------------------------------------------------
class FakeApiServer(ThreadingHTTPServer):
    """Stands in for the Kubernetes API server (no cluster here): discovery for the
    CRDs of ``groups`` and server-side apply of namespaced custom resources.

    ``namespaces``: the namespaces that exist; ``deny``: resources (plurals) the caller
    may not patch (403, like RBAC). Every request is recorded in ``requests``;
    ``objects`` holds the live objects by path; ``changes`` counts writes that changed
    an object (a no-op apply keeps its ``resourceVersion``).
    """

    daemon_threads = True

    def __init__(self, groups=GROUPS, namespaces=(), deny=()):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.namespaces = set(namespaces)
        self.deny = set(deny)
        self.requests: list[dict] = []
        self.objects: dict[str, dict] = {}
        self.changes = 0
        self._versions = itertools.count(1)
        self._lock = threading.Lock()
        #: (group, version, plural) -> CRD; only served versions
        self.resources: dict[tuple[str, str, str], dict] = {}
        for group in groups:
            for crd in crds(group):
                for version in crd["spec"]["versions"]:
                    if version.get("served", True):
                        key = (group, version["name"], crd["spec"]["names"]["plural"])
                        self.resources[key] = crd

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig pointing at this server (what ``KUBECONFIG`` names)."""
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "deployer", "user": {"token": "not-checked"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "deployer"}}],
        }))
        return path

    def patches(self) -> list[dict]:
        return [r for r in self.requests if r["method"] == "PATCH"]

    def store(self, path: str, obj: dict, namespace: str, manager: str) -> tuple[int, dict]:
        """Server-side apply of a valid object by one field manager: the applied
        configuration becomes the object; applying the same one again is a no-op (same
        ``resourceVersion``), a changed ``spec`` bumps ``generation``."""
        desired = copy.deepcopy(obj)
        desired["metadata"].setdefault("namespace", namespace)
        with self._lock:
            stored = self.objects.get(path)
            if stored is not None and stored["applied"] == desired:
                return 200, stored["live"]
            self.changes += 1
            old = stored["live"]["metadata"] if stored else {}
            spec_changed = stored is None or stored["applied"].get("spec") != desired.get("spec")
            live = copy.deepcopy(desired)
            live["metadata"].update(
                uid=old.get("uid", str(uuid.uuid4())),
                resourceVersion=str(next(self._versions)),
                generation=old.get("generation", 0) + (1 if spec_changed else 0),
                managedFields=[{"manager": manager, "operation": "Apply",
                                "apiVersion": desired["apiVersion"], "fieldsType": "FieldsV1"}],
            )
            self.objects[path] = {"applied": desired, "live": live}
        return (200 if stored else 201), live

    # discovery documents
    def group_list(self) -> dict:
        groups: dict[str, list[str]] = {}
        for group, version, _ in self.resources:
            groups.setdefault(group, [])
            if version not in groups[group]:
                groups[group].append(version)
        items = []
        for group, versions in sorted(groups.items()):
            entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
            items.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": items}

    def resource_list(self, group: str, version: str) -> dict | None:
        found = [crd for (g, v, _), crd in self.resources.items() if (g, v) == (group, version)]
        if not found:
            return None
        return {
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}",
            "resources": [
                {"name": crd["spec"]["names"]["plural"],
                 "singularName": crd["spec"]["names"].get("singular", ""),
                 "namespaced": crd["spec"]["scope"] == "Namespaced",
                 "kind": crd["spec"]["names"]["kind"],
                 "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                for crd in found
            ],
        }


def _schema_error(exc: Exception) -> str:
    if isinstance(exc, jsonschema.ValidationError):
        where = ".".join(str(p) for p in exc.absolute_path) or "<root>"
        return f"{where}: {exc.message}"
    return str(exc)


class _Handler(BaseHTTPRequestHandler):
    server: FakeApiServer

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _record(self, body: bytes | None = None) -> tuple[str, dict]:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        self.server.requests.append({
            "method": self.command, "path": url.path, "query": query,
            "content_type": self.headers.get("Content-Type"), "body": body,
        })
        return url.path, query

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _fail(self, code: int, reason: str, message: str) -> None:
        """An error answer as the API server gives it: a ``Status`` object."""
        self._send(code, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                          "status": "Failure", "message": message, "reason": reason,
                          "code": code})

    def do_GET(self):
        path, _ = self._record()
        parts = path.strip("/").split("/")
        if path == "/version":
            return self._send(200, {"major": "1", "minor": "37", "gitVersion": "v1.37.0"})
        if path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"],
                                    "serverAddressByClientCIDRs": []})
        if path == "/api/v1":
            return self._send(200, {"kind": "APIResourceList", "groupVersion": "v1",
                                    "resources": []})
        if path == "/apis":
            return self._send(200, self.server.group_list())
        if len(parts) == 3 and parts[0] == "apis":
            listing = self.server.resource_list(parts[1], parts[2])
            if listing is not None:
                return self._send(200, listing)
        return self._fail(404, "NotFound", "the server could not find the requested resource")

    def do_PATCH(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path, query = self._record(body)
        parts = path.strip("/").split("/")
        # /apis/<group>/<version>/namespaces/<namespace>/<plural>/<name>
        if len(parts) != 7 or parts[0] != "apis" or parts[3] != "namespaces":
            return self._fail(404, "NotFound", f"no route for {path}")
        _, group, version, _, namespace, plural, name = parts
        if self.headers.get("Content-Type") != "application/apply-patch+yaml":
            return self._fail(415, "UnsupportedMediaType",
                              "the body of the request was in an unknown format")
        if not query.get("fieldManager", [""])[0]:
            return self._fail(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: '
                              "fieldManager: Required value: is required for apply patch")
        crd = self.server.resources.get((group, version, plural))
        if crd is None:
            return self._fail(404, "NotFound", "the server could not find the requested resource")
        kind = crd["spec"]["names"]["kind"]
        if namespace not in self.server.namespaces:
            return self._fail(404, "NotFound", f'namespaces "{namespace}" not found')
        if plural in self.server.deny:
            return self._fail(403, "Forbidden", (
                f'{plural}.{group} "{name}" is forbidden: User '
                f'"system:serviceaccount:{namespace}:airloop-runtime" cannot patch resource '
                f'"{plural}" in API group "{group}" in the namespace "{namespace}"'))
        try:
            obj = yaml.safe_load(body)  # YAML or JSON (JSON is YAML)
        except yaml.YAMLError as exc:
            return self._fail(400, "BadRequest", f"error decoding YAML: {exc}")
        if not isinstance(obj, dict) or (obj.get("apiVersion"), obj.get("kind")) != (
            f"{group}/{version}", kind
        ):
            return self._fail(400, "BadRequest", f"{kind} {name}: apiVersion/kind differ from URL")
        meta = obj.get("metadata") or {}
        if meta.get("name") != name or meta.get("namespace", namespace) != namespace:
            return self._fail(400, "BadRequest", (
                f"the object {meta.get('namespace')}/{meta.get('name')} does not match the "
                f"URL {namespace}/{name}"))
        try:
            validate_custom(obj)
        except (jsonschema.ValidationError, ValueError) as exc:
            return self._fail(422, "Invalid",
                              f'{kind}.{group} "{name}" is invalid: {_schema_error(exc)}')
        self._send(*self.server.store(path, obj, namespace, query["fieldManager"][0]))


@pytest.fixture
def fake_api():
    servers = []

    def start(**kwargs) -> FakeApiServer:
        server = FakeApiServer(**kwargs)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# -- a project, its settings and its registry ---------------------------------------------
@pytest.fixture
def project(airloop_home, mlflow_server, fake_api, tmp_path):
    """``make(target, canary=0, root=ARTIFACTS_ROOT, **api)``: the demo churn spec under a
    unique tenant (so a unique registered model and namespace) deploying to ``target``, a
    fake API server (``api``: its arguments; by default the tenant namespace exists) and
    settings from an explicit environment: the tenant ConfigMap's keys and a kubeconfig
    pointing at the fake."""

    def make(target: str, canary: int = 0, root: str | None = ARTIFACTS_ROOT, **api):
        raw = yaml.safe_load((PROJECTS / "churn.yaml").read_text())
        raw["tenant"] = f"k{uuid.uuid4().hex[:8]}"
        raw["deployment"].update(target=target, canary_traffic=canary)
        spec = parse_spec(raw, PROJECTS / "churn.yaml")
        api.setdefault("namespaces", {f"airloop-{spec.tenant}"})
        server = fake_api(**api)
        environ = {
            "AIRLOOP_HOME": str(tmp_path / "home"),
            "MLFLOW_TRACKING_URI": mlflow_server,
            "AIRLOOP_MODE": "kubernetes",
            "AIRLOOP_NAMESPACE": f"airloop-{spec.tenant}",
            "AIRLOOP_SERVING_TARGET": target,
            "KUBECONFIG": str(server.kubeconfig(tmp_path / "kubeconfig")),
        }
        if root is not None:
            environ["AIRLOOP_MLFLOW_ARTIFACTS_URI"] = root
        return spec, config.load(environ), server

    return make


def register_trained(spec, settings, dag_run_id: str):
    """A version made the production way: a train-like parent run with a logged model,
    then the register step itself (its download URI is the server's mlflow-artifacts:/)."""
    client = tracking.client(settings)
    tracking.use(settings)
    experiment = tracking.ensure_experiment(client, spec)
    model = DummyClassifier(strategy="prior").fit([[0.0], [1.0]], [0, 1])
    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.sklearn.log_model(model, name="model")
        mlflow.log_metric(f"holdout_{spec.metric.name}", 0.75)
        mlflow.set_tags({tracking.TAG_DAG_RUN: dag_run_id, tracking.TAG_ROLE: tracking.ROLE_PARENT,
                         tracking.TAG_MODEL_URI: info.model_uri, "airloop.model_id": info.model_id})
    register.run(spec, run_id=dag_run_id, settings=settings)
    version = tracking.model_version_for_run(client, spec.model_name, dag_run_id)
    assert version is not None and version.run_id == run.info.run_id
    return version


def register_at(spec, settings, dag_run_id: str, source: str):
    """A version whose artifacts already live in an object store (``s3://…`` source)."""
    client = tracking.client(settings)
    tracking.ensure_registered_model(client, spec)
    return client.create_model_version(spec.model_name, source=source,
                                       tags={tracking.TAG_DAG_RUN: dag_run_id})


def _run_id() -> str:
    return f"manual__{uuid.uuid4().hex[:10]}"


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message, message
    return message


# -- tests ----------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["kserve", "seldon"])
def test_deploy_applies_the_registered_version_with_a_pullable_uri(project, target):
    """The register step's version: the step maps its mlflow-artifacts:/ download URI
    under AIRLOOP_MLFLOW_ARTIFACTS_URI and applies objects the CRD schemas accept."""
    spec, settings, server = project(target)
    run_id = _run_id()
    mv = register_trained(spec, settings, run_id)
    client = tracking.client(settings)
    download = client.get_model_version_download_uri(spec.model_name, mv.version)
    assert download.startswith("mlflow-artifacts:/")
    # the download URI is the model folder itself (MLmodel at its top), so the same path
    # under the artifact root is what the cluster must pull
    listing = mlflow.artifacts.list_artifacts(artifact_uri=download,
                                              tracking_uri=settings.tracking_uri)
    assert "MLmodel" in {Path(a.path).name for a in listing}
    expected_uri = f"{ARTIFACTS_ROOT}/{urlsplit(download).path.lstrip('/')}"

    result = deploy.run(spec, run_id=run_id, settings=settings)

    ns = f"airloop-{spec.tenant}"
    assert result["target"] == target and result["namespace"] == ns
    assert result["version"] == str(mv.version) and result["model_uri"] == expected_uri
    assert result["previous_version"] is None and result["canary_traffic"] == 100
    patches = server.patches()
    assert all(p["content_type"] == "application/apply-patch+yaml" for p in patches)
    assert all(p["query"]["fieldManager"] == ["airloop"] for p in patches)
    assert all(p["query"]["force"][0].lower() == "true" for p in patches)
    live = {path: o["live"] for path, o in server.objects.items()}
    if target == "kserve":
        path = f"{KSERVE}/namespaces/{ns}/inferenceservices/{spec.serving_name}"
        assert [p["path"] for p in patches] == [path]
        predictor = live[path]["spec"]["predictor"]
        assert predictor["model"]["storageUri"] == expected_uri
        assert "canaryTrafficPercent" not in predictor
        assert result["applied"] == [f"InferenceService/{spec.serving_name}"]
    else:
        model = f"{spec.serving_name}-v{mv.version}"
        base = f"{SELDON}/namespaces/{ns}"
        assert [p["path"] for p in patches] == [f"{base}/models/{model}",
                                                f"{base}/experiments/{spec.serving_name}"]
        assert live[f"{base}/models/{model}"]["spec"]["storageUri"] == expected_uri
        assert live[f"{base}/experiments/{spec.serving_name}"]["spec"]["candidates"] == [
            {"name": model, "weight": 100}]


@pytest.mark.parametrize("target", ["seldon", "kserve"])
def test_canary_splits_traffic_with_the_champion(project, target):
    """The champion (promoted by the promote step) is the other side of the canary."""
    spec, settings, server = project(target, canary=20)
    first, second = _run_id(), _run_id()
    v1 = register_at(spec, settings, first, "s3://models-bucket/churn/1")
    deploy.run(spec, run_id=first, settings=settings)
    promote.run(spec, run_id=first, settings=settings)
    v2 = register_at(spec, settings, second, "s3://models-bucket/churn/2")

    result = deploy.run(spec, run_id=second, settings=settings)

    assert (result["version"], result["previous_version"]) == (str(v2.version), str(v1.version))
    assert result["canary_traffic"] == 20 and result["model_uri"] == "s3://models-bucket/churn/2"
    ns = f"airloop-{spec.tenant}"
    if target == "seldon":
        base = f"{SELDON}/namespaces/{ns}"
        old, new = (f"{spec.serving_name}-v{v.version}" for v in (v1, v2))
        experiment = server.objects[f"{base}/experiments/{spec.serving_name}"]["live"]["spec"]
        assert experiment["default"] == old
        assert experiment["candidates"] == [{"name": old, "weight": 80},
                                            {"name": new, "weight": 20}]
        # both versions' Models are live: the split has something to send traffic to
        assert {f"{base}/models/{old}", f"{base}/models/{new}"} <= set(server.objects)
    else:
        path = f"{KSERVE}/namespaces/{ns}/inferenceservices/{spec.serving_name}"
        predictor = server.objects[path]["live"]["spec"]["predictor"]
        assert predictor["canaryTrafficPercent"] == 20
        assert predictor["model"]["storageUri"] == "s3://models-bucket/churn/2"


@pytest.mark.parametrize("target", ["seldon", "kserve"])
def test_reapply_changes_nothing(project, target):
    spec, settings, server = project(target, canary=30)
    run_id = _run_id()
    register_at(spec, settings, run_id, "s3://models-bucket/churn/1")
    first = deploy.run(spec, run_id=run_id, settings=settings)
    sent = [p["body"] for p in server.patches()]
    live = {path: o["live"]["metadata"]["resourceVersion"] for path, o in server.objects.items()}
    changes = server.changes
    assert changes == len(sent) == len(first["applied"])

    again = deploy.run(spec, run_id=run_id, settings=settings)

    assert again == first
    assert [p["body"] for p in server.patches()[len(sent):]] == sent
    assert server.changes == changes, "applying the same objects again must change nothing"
    assert {p: o["live"]["metadata"]["resourceVersion"] for p, o in server.objects.items()} == live


@pytest.mark.parametrize(
    "api, message",
    [
        ({"deny": {"inferenceservices"}},
         r"apply InferenceService (\S+)/(\S+) failed: HTTP 403 .*cannot patch resource "
         r'"inferenceservices"'),
        ({"namespaces": set()},
         r'apply InferenceService (\S+)/(\S+) failed: HTTP 404 namespaces "\1" not found'),
        ({"groups": ("mlops.seldon.io",)},
         r"apply InferenceService (\S+)/(\S+) failed: the cluster does not serve "
         r"InferenceService \(serving.kserve.io/v1beta1\); is its CRD installed\?"),
    ],
    ids=["forbidden", "no-namespace", "no-crd"],
)
def test_api_error_is_one_line_naming_the_object(project, api, message):
    spec, settings, server = project("kserve", **api)
    run_id = _run_id()
    register_at(spec, settings, run_id, "s3://models-bucket/churn/1")
    with pytest.raises(AirloopError) as err:
        deploy.run(spec, run_id=run_id, settings=settings)
    line = _one_line(err)
    match = re.match(message, line)
    assert match, line
    assert match.groups() == (f"airloop-{spec.tenant}", spec.serving_name)
    assert not server.objects


@pytest.mark.parametrize(
    "root, message",
    [
        (None, "proxied by the MLflow server, which a cluster cannot pull from: "
               "set AIRLOOP_MLFLOW_ARTIFACTS_URI"),
        ("file:///srv/mlartifacts",
         "cannot be pulled by a cluster .*check AIRLOOP_MLFLOW_ARTIFACTS_URI"),
    ],
    ids=["unset", "not-an-object-store"],
)
def test_unmappable_artifact_uri_is_one_clear_line(project, root, message):
    spec, settings, server = project("seldon", root=root)
    run_id = _run_id()
    register_trained(spec, settings, run_id)
    with pytest.raises(AirloopError, match=message) as err:
        deploy.run(spec, run_id=run_id, settings=settings)
    _one_line(err)
    assert not server.requests, "nothing may reach the cluster with an unpullable URI"


def test_unreachable_api_server_is_one_clear_line(project):
    spec, settings, server = project("seldon")
    run_id = _run_id()
    register_at(spec, settings, run_id, "s3://models-bucket/churn/1")
    server.shutdown()
    server.server_close()  # nothing listens on its port any more
    with pytest.raises(AirloopError, match=rf"Kubernetes API {server.url} is unreachable") as err:
        deploy.run(spec, run_id=run_id, settings=settings)
    _one_line(err)


def test_no_registered_version_is_one_clear_line(project):
    spec, settings, server = project("kserve")
    with pytest.raises(AirloopError, match="no registered version .* run the register step") as err:
        deploy.run(spec, run_id=_run_id(), settings=settings)
    _one_line(err)
    assert not server.requests


# -- the fake is not blind --------------------------------------------------------------------
@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda o: o["spec"]["predictor"].update(minReplicas="one"),
         "spec.predictor.minReplicas: 'one' is not of type 'integer'"),
        (lambda o: o["spec"]["predictor"]["model"].update(protocolVersoin="v2"),
         "'protocolVersoin' was unexpected"),
        (lambda o: o["metadata"].update(name="Not_A_Name"), "invalid metadata.name"),
    ],
)
def test_fake_api_server_rejects_what_the_crd_schema_rejects(project, mutate, needle):
    """A server that accepted anything would make the tests above prove nothing."""
    spec, settings, server = project("kserve")
    (isvc,) = k8s_serving.build_resources(spec, 1, "s3://models-bucket/churn/1", settings,
                                          options=k8s_serving.options_from_settings(settings))
    bad = copy.deepcopy(isvc)
    mutate(bad)
    api = k8s_serving._api_client(settings)
    try:
        k8s_serving.apply([isvc], api_client=api)  # the valid one is accepted
        with pytest.raises(AirloopError) as err:
            k8s_serving.apply([bad], api_client=api)
    finally:
        api.close()
    line = _one_line(err)
    assert "failed: HTTP 422 InferenceService.serving.kserve.io" in line and needle in line, line
    assert server.changes == 1


def test_fake_api_server_requires_apply_patch_and_a_field_manager(project):
    spec, settings, server = project("kserve")
    path = (f"/apis/serving.kserve.io/v1beta1/namespaces/airloop-{spec.tenant}"
            f"/inferenceservices/{spec.serving_name}")

    def patch(query: str, content_type: str) -> int:
        req = urllib.request.Request(f"{server.url}{path}{query}", data=b"{}", method="PATCH",
                                     headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert patch("?fieldManager=airloop", "application/merge-patch+json") == 415
    assert patch("", "application/apply-patch+yaml") == 422
    assert not server.objects
