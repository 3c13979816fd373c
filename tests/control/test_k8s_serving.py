"""The Kubernetes serving targets' pure parts: resources built for a registered model
version are valid against the published Seldon Core 2 / KServe CRD schemas, the
registry's artifact URI is mapped to one a cluster can pull, and the chart's tenant
settings agree with both.

Applying them goes through the deploy step, against a fake API server, in the runtime
tier: ``tests/runtime/test_deploy_kubernetes.py``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

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
        ("seldon", "3", URI, "positive integer"),
        ("kserve", 1, "model.pkl", "not a storage URI"),
        ("kserve", 1, "models:/churn/1", "not a storage URI"),
        ("kserve", 1, "mlflow-artifacts:/1/models/m-1/artifacts", "not a storage URI"),
    ],
)
def test_bad_input_is_one_clear_error(target, version, uri, message):
    with pytest.raises(AirloopError, match=message) as err:
        serving.build_resources(spec_with(target=target), version, uri, None)
    assert "\n" not in str(err.value)


def test_kserve_canary_needs_a_different_previous_version():
    """Re-deploying the champion itself is a full rollout, not a split with itself."""
    spec = spec_with(target="kserve", canary_traffic=25)
    (isvc,) = serving.build_resources(spec, 4, URI, None, previous_version=4)
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    _, experiment = serving.build_resources(spec_with(target="seldon", canary_traffic=25), 4, URI,
                                            None, previous_version=4)
    assert experiment["spec"]["candidates"] == [{"name": "demo-churn-v4", "weight": 100}]


ROOT = "s3://airloop-mlflow/artifacts"


@pytest.mark.parametrize(
    "download_uri, root, expected",
    [
        # MLflow 3 logged model behind a proxying server (the register step's versions)
        ("mlflow-artifacts:/1/models/m-0a1b/artifacts", ROOT,
         "s3://airloop-mlflow/artifacts/1/models/m-0a1b/artifacts"),
        # the host form, and a root given with a trailing slash
        ("mlflow-artifacts://mlflow:5000/1/abc/artifacts/model", ROOT + "/",
         "s3://airloop-mlflow/artifacts/1/abc/artifacts/model"),
        # already an object-store location: unchanged, the root is not needed
        ("s3://other-bucket/models/churn/3", None, "s3://other-bucket/models/churn/3"),
        ("gs://bucket/m/1", ROOT, "gs://bucket/m/1"),
    ],
)
def test_storage_uri_maps_proxied_artifacts_under_the_root(download_uri, root, expected):
    assert serving.storage_uri(download_uri, root) == expected


@pytest.mark.parametrize(
    "download_uri, root, message",
    [
        ("mlflow-artifacts:/1/models/m-1/artifacts", None,
         "proxied by the MLflow server.*set AIRLOOP_MLFLOW_ARTIFACTS_URI"),
        ("mlflow-artifacts:/1/models/m-1/artifacts", "file:///srv/mlartifacts",
         "cannot be pulled by a cluster.*AIRLOOP_MLFLOW_ARTIFACTS_URI"),
        ("file:///tmp/mlruns/1/abc/artifacts/model", ROOT, "cannot be pulled by a cluster"),
        ("runs:/abc/model", ROOT, "cannot be pulled by a cluster"),
    ],
)
def test_unpullable_artifacts_are_one_clear_error(download_uri, root, message):
    with pytest.raises(AirloopError, match=message) as err:
        serving.storage_uri(download_uri, root)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"version": "3", "model_uri": URI}, "version must be a positive integer"),
        ({"version": 3, "model_uri": URI, "previous_version": "2"}, "previous_version"),
        ({"version": 3, "model_uri": "models:/churn/3"}, "not a storage URI"),
    ],
)
def test_serving_request_is_typed(fields, message):
    with pytest.raises(AirloopError, match=message):
        serving.ServingRequest(**fields)


@pytest.mark.parametrize("values", [{}, "production"], ids=["default", "production"])
def test_chart_tenant_env_names_mlflows_artifact_destination(values):
    """AIRLOOP_MLFLOW_ARTIFACTS_URI in the tenant ConfigMap is the exact value MLflow gets
    as --artifacts-destination, so a mapped URI points at the bytes the server stored."""
    import yaml
    from chart_utils import CHART, render_chart

    if values == "production":
        values = yaml.safe_load((CHART / "values-production.yaml").read_text())
    objs = render_chart(values, ["templates/tenants/tenants-configmap.yaml",
                                 "templates/mlflow/mlflow-deployment.yaml"])
    (mlflow,) = [o for o in objs if o["kind"] == "Deployment"]
    args = mlflow["spec"]["template"]["spec"]["containers"][0]["args"]
    (destination,) = [a.split("=", 1)[1] for a in args if a.startswith("--artifacts-destination=")]
    for cm in [o for o in objs if o["kind"] == "ConfigMap"]:
        settings = load_settings(cm["data"])
        assert settings.mlflow_artifacts_uri == destination.rstrip("/")
        uri = serving.storage_uri("mlflow-artifacts:/3/models/m-1/artifacts",
                                  settings.mlflow_artifacts_uri)
        assert uri == f"{destination.rstrip('/')}/3/models/m-1/artifacts"
        options = replace(serving.options_from_settings(settings), cluster_target=None)
        for target in serving.TARGETS:
            for obj in serving.build_resources(spec_with(target=target), 3, uri, None,
                                               options=options):
                validate_object(obj)


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


