"""Deploy step in kubernetes mode: resources built for a registered model version are
valid against the published Seldon Core 2 / KServe CRD schemas, and ``apply`` uses
server-side apply idempotently.

There is no Kubernetes API server on this machine, so ``apply`` is tested against a
fake: a tiny local HTTP server that implements the server-side-apply PATCH endpoint
(it stores the applied object per path and records every request).
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chart_utils import validate_object  # noqa: E402

from airloop.core.errors import AirloopError  # noqa: E402
from airloop.runtime.serving_targets import kubernetes as serving  # noqa: E402
from airloop.core.settings import load as load_settings  # noqa: E402
from airloop.core.spec import load_spec, parse_spec  # noqa: E402

PROJECTS = Path(__file__).resolve().parents[2] / "include" / "projects"

URI = "s3://airloop-mlflow/1/abc123/artifacts/model"


def spec_with(**deployment):
    spec = load_spec("churn", PROJECTS)
    raw = spec.model_dump(mode="json")
    raw["deployment"].update(deployment)
    return parse_spec(raw, spec.path)


@pytest.mark.parametrize("target", ["seldon", "kserve"])
@pytest.mark.parametrize("canary", [0, 20])
def test_built_resources_validate_against_crds(target, canary):
    spec = spec_with(target=target, canary_traffic=canary, min_replicas=2, max_replicas=5)
    resources = serving.build_resources(spec, 3, URI, None, previous_version=2)
    assert resources
    kinds = {"seldon": ["Model", "Experiment"], "kserve": ["InferenceService"]}[target]
    assert [o["kind"] for o in resources] == kinds
    for obj in resources:
        # Model/InferenceService: /work/shared/crds; Experiment: tests/data/crds
        # (Seldon Core v2.6.0, see tests/data/crds/SOURCES.md).
        validate_object(obj)
        assert obj["metadata"]["namespace"] == "airloop-demo"
        if obj["kind"] == "Experiment":
            # not expressible in the CRD schema: the split adds up to the whole
            assert sum(c["weight"] for c in obj["spec"]["candidates"]) == 100


def test_kserve_inference_service_shape():
    spec = spec_with(target="kserve", canary_traffic=25, min_replicas=1, max_replicas=4)
    (isvc,) = serving.build_resources(spec, 7, URI, None, previous_version=6)
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["protocolVersion"] == "v2"
    assert predictor["model"]["modelFormat"] == {"name": "mlflow"}
    assert predictor["model"]["storageUri"] == URI
    assert predictor["canaryTrafficPercent"] == 25
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 4)
    # first deployment: no previous revision, so no canary split
    (first,) = serving.build_resources(spec, 1, URI, None)
    assert "canaryTrafficPercent" not in first["spec"]["predictor"]


def test_seldon_canary_splits_traffic_between_versions():
    spec = spec_with(target="seldon", canary_traffic=20)
    model, experiment = serving.build_resources(spec, 5, URI, None, previous_version=4)
    assert model["kind"] == "Model" and model["metadata"]["name"] == "demo-churn-v5"
    assert model["spec"]["requirements"] == ["mlflow"]
    assert model["spec"]["server"] == "airloop-mlserver"
    assert experiment["spec"]["default"] == "demo-churn-v4"
    assert experiment["spec"]["candidates"] == [
        {"name": "demo-churn-v4", "weight": 80},
        {"name": "demo-churn-v5", "weight": 20},
    ]
    # full promotion (canary 0): the new version takes all traffic
    _, promoted = serving.build_resources(spec_with(target="seldon"), 5, URI, None, previous_version=4)
    assert promoted["spec"]["candidates"] == [{"name": "demo-churn-v5", "weight": 100}]


def test_storage_credentials_from_the_chart_runtime_env():
    """The production chart's airloop-runtime-env ConfigMap, loaded as the step's env,
    gives the Seldon Model its rclone secret and the KServe predictor the ServiceAccount
    that carries the S3 secret; both objects still validate against their CRDs."""
    import yaml
    from chart_utils import CHART, render_chart

    production = yaml.safe_load((CHART / "values-production.yaml").read_text())
    (cm,) = [o for o in render_chart(production, ["templates/tenants/tenants-configmap.yaml"])
             if o["metadata"]["namespace"] == "airloop-demo"]
    options = serving.options_from_settings(load_settings(cm["data"]))
    assert options.storage_secret == "airloop-model-storage-rclone"
    model, _ = serving.build_resources(spec_with(target="seldon"), 3, URI, None, options=options)
    assert model["spec"]["secretName"] == "airloop-model-storage-rclone"
    assert model["metadata"]["namespace"] == "airloop-demo"
    validate_object(model)
    # the chart installs one target (serving.target, here seldon): a project asking for
    # another is refused with the fix in the message
    assert options.cluster_target == production.get("serving", {}).get("target", "seldon")
    with pytest.raises(AirloopError, match="serving.target.*set the project's deployment.target"):
        serving.build_resources(spec_with(target="kserve"), 3, URI, None, options=options)
    (isvc,) = serving.build_resources(spec_with(target="kserve"), 3, URI, None,
                                      options=replace(options, cluster_target="kserve"))
    assert isvc["spec"]["predictor"]["serviceAccountName"] == "airloop-model"
    validate_object(isvc)
    # no secret configured (default chart values): the Model carries none
    env = {k: v for k, v in cm["data"].items() if k != "AIRLOOP_STORAGE_SECRET"}
    model, _ = serving.build_resources(spec_with(target="seldon"), 3, URI, None,
                                       options=serving.options_from_settings(load_settings(env)))
    assert "secretName" not in model["spec"]
    empty = load_settings({**env, "AIRLOOP_STORAGE_SECRET": ""})
    assert serving.options_from_settings(empty).storage_secret is None


def test_build_is_deterministic():
    spec = spec_with(target="seldon", canary_traffic=10)
    assert serving.build_resources(spec, 2, URI, None, previous_version=1) == serving.build_resources(
        spec, 2, URI, None, previous_version=1
    )


@pytest.mark.parametrize(
    "target, version, uri, message",
    [
        ("local", 1, URI, "deployment.target='local'"),
        ("seldon", 0, URI, "positive integer"),
        ("kserve", 1, "model.pkl", "not a storage URI"),
    ],
)
def test_bad_input_is_one_clear_error(target, version, uri, message):
    with pytest.raises(AirloopError, match=message):
        serving.build_resources(spec_with(target=target), version, uri, None)


def test_validator_rejects_wrong_type_and_unknown_field():
    """The CRD validator is strict: the tests above could fail."""
    spec = spec_with(target="kserve")
    (isvc,) = serving.build_resources(spec, 1, URI, None)
    bad_type = json.loads(json.dumps(isvc))
    bad_type["spec"]["predictor"]["minReplicas"] = "one"
    with pytest.raises(jsonschema.ValidationError, match="'one' is not of type 'integer'"):
        validate_object(bad_type)
    unknown = json.loads(json.dumps(isvc))
    unknown["spec"]["predictor"]["model"]["protocolVersoin"] = "v2"
    with pytest.raises(jsonschema.ValidationError, match="protocolVersoin"):
        validate_object(unknown)
    (model, _) = serving.build_resources(spec_with(target="seldon"), 1, URI, None)
    model["spec"]["replicas"] = 1.5
    with pytest.raises(jsonschema.ValidationError):
        validate_object(model)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s["candidates"][0].update(weight="20"), "'20' is not of type 'integer'"),
        (lambda s: s["candidates"][0].pop("weight"), "'weight' is a required property"),
        (lambda s: s.pop("candidates"), "'candidates' is a required property"),
        (lambda s: s.update(candidate=[]), "'candidate' was unexpected"),
        (lambda s: s.update(mirror={"name": "demo-churn-v1"}), "'percent' is a required property"),
    ],
)
def test_experiment_validated_against_seldon_crd(mutate, message):
    """The Experiment is checked against the published CRD (tests/data/crds), strictly."""
    from chart_utils import crd_files, crd_schema

    assert [p.name for p in crd_files("mlops.seldon.io") if "experiments" in p.name] == [
        "mlops.seldon.io_experiments.yaml"
    ]
    assert crd_schema("mlops.seldon.io/v1alpha1", "Experiment") is not None
    _, experiment = serving.build_resources(
        spec_with(target="seldon", canary_traffic=20), 2, URI, None, previous_version=1
    )
    validate_object(experiment)
    bad = json.loads(json.dumps(experiment))
    mutate(bad["spec"])
    with pytest.raises(jsonschema.ValidationError, match=message):
        validate_object(bad)


# -- server-side apply against a fake API server ---------------------------------------
class FakeApiServer(ThreadingHTTPServer):
    """Implements only PATCH with application/apply-patch+yaml (server-side apply)."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.objects: dict[str, dict] = {}
        self.changes = 0


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_PATCH(self):
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        record = {
            "path": url.path,
            "query": parse_qs(url.query),
            "content_type": self.headers["Content-Type"],
            "body": body,
        }
        self.server.requests.append(record)
        if record["content_type"] != "application/apply-patch+yaml":
            return self._send(415, {"kind": "Status", "message": "unsupported patch type"})
        if "fieldManager" not in record["query"]:
            return self._send(422, {"kind": "Status", "message": "fieldManager is required"})
        obj = json.loads(body)  # JSON is YAML; the client sends JSON
        if self.server.objects.get(url.path) != obj:
            self.server.changes += 1
        self.server.objects[url.path] = obj
        self._send(200, obj)

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_api():
    from kubernetes import client

    server = FakeApiServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{server.server_address[1]}"
    api = client.ApiClient(cfg)
    yield server, api
    api.close()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("target", ["seldon", "kserve"])
def test_deploy_applies_server_side_and_is_idempotent(fake_api, target, monkeypatch):
    server, api = fake_api
    monkeypatch.delenv("AIRLOOP_NAMESPACE", raising=False)
    spec = spec_with(target=target, canary_traffic=30)
    result = serving.deploy(spec, version=2, model_uri=URI, settings=load_settings({}), previous_version=1,
                            api_client=api)
    first = list(server.requests)
    assert first and all(r["content_type"] == "application/apply-patch+yaml" for r in first)
    assert all(r["query"]["fieldManager"] == ["airloop"] for r in first)
    assert all(r["query"]["force"] == ["true"] for r in first)
    paths = [r["path"] for r in first]
    if target == "seldon":
        assert paths == [
            "/apis/mlops.seldon.io/v1alpha1/namespaces/airloop-demo/models/demo-churn-v2",
            "/apis/mlops.seldon.io/v1alpha1/namespaces/airloop-demo/experiments/demo-churn",
        ]
    else:
        assert paths == [
            "/apis/serving.kserve.io/v1beta1/namespaces/airloop-demo/inferenceservices/demo-churn"
        ]
    assert result["canary_traffic"] == 30 and result["previous_version"] == 1
    changes = server.changes
    serving.deploy(spec, version=2, model_uri=URI, settings=load_settings({}), previous_version=1, api_client=api)
    second = server.requests[len(first):]
    assert [r["body"] for r in second] == [r["body"] for r in first]
    assert server.changes == changes, "applying twice must change nothing"


def test_apply_error_names_the_object(fake_api, monkeypatch):
    """An API error becomes one AirloopError line naming the object."""
    server, api = fake_api
    from kubernetes.client.exceptions import ApiException

    def refuse(*args, **kwargs):
        raise ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(api, "call_api", refuse)
    resources = serving.build_resources(spec_with(target="kserve"), 1, URI, None)
    with pytest.raises(AirloopError, match="InferenceService airloop-demo/demo-churn failed: HTTP 403"):
        serving.apply(resources, api_client=api)
