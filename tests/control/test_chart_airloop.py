"""Chart tests: render helm/airloop offline (helm-python-sdk, no cluster) for default,
production and two-tenant values; validate every object (built-in kinds strictly with
kubernetes-validate, custom resources against the published CRD schemas); check the
restricted profile for every container; schema and check-values reject bad values."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jmespath
import jsonschema
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chart_utils import CHART, NAMESPACE, SHARED, container_problems, pod_specs, render_chart, validate_object  # noqa: E402

PRODUCTION = yaml.safe_load((CHART / "values-production.yaml").read_text())
TWO_TENANTS = {"tenants": [{"name": "alpha"}, {"name": "beta", "quota": {"pods": "10"}}]}
CASES = {"default": {}, "production": PRODUCTION, "two-tenants": TWO_TENANTS}


def by_kind(objs, kind, name=None):
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


@pytest.fixture(scope="module", params=sorted(CASES))
def rendered(request):
    return request.param, render_chart(CASES[request.param])


class TestAllObjects:
    def test_every_object_validates(self, rendered):
        case, objs = rendered
        assert len(objs) > 15
        for obj in objs:
            try:
                validate_object(obj)
            except Exception as exc:  # name the object in the failure
                pytest.fail(f"{case}: {obj['kind']}/{obj['metadata']['name']}: {exc}")

    def test_every_service_monitor_scrapes_a_rendered_service_port(self, rendered):
        """A ServiceMonitor selects a Service of the release by its labels, and each
        endpoint port is a named port of that Service."""
        case, objs = rendered
        monitors = by_kind(objs, "ServiceMonitor")
        assert monitors
        services = by_kind(objs, "Service")
        for sm in monitors:
            want = sm["spec"]["selector"]["matchLabels"]
            hits = [s for s in services
                    if s["metadata"]["namespace"] == sm["metadata"]["namespace"]
                    and want.items() <= (s["metadata"].get("labels") or {}).items()]
            assert len(hits) == 1, f"{case}: ServiceMonitor {sm['metadata']['name']} selects {len(hits)} Services"
            ports = {p.get("name") for p in hits[0]["spec"]["ports"]}
            for ep in sm["spec"]["endpoints"]:
                assert ep["port"] in ports, f"{case}: {sm['metadata']['name']}: no port {ep['port']!r} in {ports}"

    def test_every_container_restricted_with_resources(self, rendered):
        case, objs = rendered
        pods = [(f"{o['kind']}/{o['metadata']['name']}", p) for o in objs for p in pod_specs(o)]
        assert len(pods) >= 6
        problems = [p for owner, pod in pods for p in container_problems(pod, owner)]
        assert not problems, "\n".join(problems)


class TestMlflow:
    def test_server_args(self):
        (dep,) = render_chart(PRODUCTION, ["templates/mlflow/mlflow-deployment.yaml"])
        args = jmespath.search("spec.template.spec.containers[0].args", dep)
        assert "--app-name=basic-auth" in args
        assert "--serve-artifacts" in args
        assert "--artifacts-destination=s3://prod-airloop-mlflow/artifacts" in args
        hosts = next(a for a in args if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
        assert "mlflow.example.com" in hosts and "localhost" in hosts
        secret = jmespath.search("spec.template.spec.volumes[?name=='auth'].secret.secretName | [0]", dep)
        assert secret == "airloop-mlflow"

    def test_generated_secret_only_without_existing(self):
        assert by_kind(render_chart(), "Secret")
        assert not by_kind(render_chart(PRODUCTION), "Secret")

    def test_basic_auth_has_a_shared_csrf_key_and_an_admin_user(self):
        objs = render_chart()
        (secret,) = by_kind(objs, "Secret", "airloop-mlflow")
        data = secret["stringData"]
        assert len(data["flask-secret-key"]) >= 32
        assert f"admin_username = {data['admin-username']}" in data["basic_auth.ini"]
        dep = by_kind(objs, "Deployment", "airloop-mlflow")[0]
        key = jmespath.search(
            "spec.template.spec.containers[0].env[?name=='MLFLOW_FLASK_SERVER_SECRET_KEY']"
            ".valueFrom.secretKeyRef | [0]", dep)
        assert key == {"name": "airloop-mlflow", "key": "flask-secret-key"}

    def test_prometheus_metrics_exposed_and_scraped_with_basic_auth(self):
        objs = render_chart(PRODUCTION)
        dep = by_kind(objs, "Deployment", "airloop-mlflow")[0]
        pod = dep["spec"]["template"]["spec"]
        args = jmespath.search("containers[0].args", pod)
        (flag,) = [a for a in args if a.startswith("--expose-prometheus=")]
        metrics_dir = flag.split("=", 1)[1]
        # the directory is under a writable emptyDir mount (root filesystem is read-only)
        mounts = jmespath.search("containers[0].volumeMounts", pod)
        (mount,) = [m for m in mounts if metrics_dir.startswith(m["mountPath"].rstrip("/") + "/")]
        assert not mount.get("readOnly")
        volume = jmespath.search(f"volumes[?name=='{mount['name']}'] | [0]", pod)
        assert "emptyDir" in volume
        # Prometheus scrapes <pod IP>:<port>; that Host must pass MLflow's --allowed-hosts
        hosts = next(a for a in args if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
        assert "$(POD_IP):5000" in hosts
        assert jmespath.search("containers[0].env[?name=='POD_IP'].valueFrom.fieldRef.fieldPath | [0]",
                               pod) == "status.podIP"
        (sm,) = [o for o in by_kind(objs, "ServiceMonitor") if o["metadata"]["name"] == "airloop-mlflow"]
        assert jmespath.search("spec.endpoints[0].[port, path]", sm) == ["http", "/metrics"]
        assert jmespath.search("spec.endpoints[0].basicAuth", sm) == {
            "username": {"name": "airloop-mlflow", "key": "admin-username"},
            "password": {"name": "airloop-mlflow", "key": "admin-password"},
        }
        assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"

    def test_metrics_scrape_secret_and_switches(self):
        own = {"mlflow": {"metrics": {"basicAuth": {"secretName": "mlflow-scraper",
                                                    "usernameKey": "user", "passwordKey": "pass"}}}}
        (sm,) = render_chart(own, ["templates/mlflow/mlflow-servicemonitor.yaml"])
        assert jmespath.search("spec.endpoints[0].basicAuth.password", sm) == {"name": "mlflow-scraper", "key": "pass"}
        assert not render_chart({"monitoring": {"serviceMonitors": False}},
                                ["templates/mlflow/mlflow-servicemonitor.yaml"])
        objs = render_chart({"mlflow": {"metrics": {"enabled": False}}})
        assert not [o for o in by_kind(objs, "ServiceMonitor") if o["metadata"]["name"] == "airloop-mlflow"]
        dep = by_kind(objs, "Deployment", "airloop-mlflow")[0]
        text = json.dumps(dep)
        assert "--expose-prometheus" not in text and "POD_IP" not in text


class TestFeast:
    def test_redis_statefulset_or_external(self):
        objs = render_chart()
        assert by_kind(objs, "StatefulSet", "airloop-redis")
        cm = by_kind(objs, "ConfigMap", "airloop-feast")[0]
        assert "connection_string: airloop-redis.airloop-system.svc:6379" in cm["data"]["feature_store.yaml"]
        ext = render_chart({"feast": {"redis": {"enabled": False, "externalUrl": "redis.example:6379"}}})
        assert not by_kind(ext, "StatefulSet")
        assert "redis.example:6379" in by_kind(ext, "ConfigMap", "airloop-feast")[0]["data"]["feature_store.yaml"]


    def test_redis_exporter_sidecar_service_port_and_monitor(self):
        objs = render_chart()
        (sts,) = by_kind(objs, "StatefulSet", "airloop-redis")
        pod = sts["spec"]["template"]["spec"]
        exporter = jmespath.search("containers[?name=='redis-exporter'] | [0]", pod)
        assert exporter["image"] == "docker.io/oliver006/redis_exporter:v1.88.0"
        assert "--redis.addr=redis://127.0.0.1:6379" in exporter["args"]
        assert "--web.listen-address=:9121" in exporter["args"]
        assert jmespath.search("ports[?name=='metrics'].containerPort", exporter) == [9121]
        assert jmespath.search("readinessProbe.httpGet.path", exporter) == "/health"
        assert exporter["securityContext"]["runAsUser"] == 59000
        assert exporter["securityContext"]["readOnlyRootFilesystem"] is True
        (svc,) = by_kind(objs, "Service", "airloop-redis")
        assert jmespath.search("spec.ports[?name=='metrics'].[port, targetPort] | [0]", svc) == [9121, "metrics"]
        (sm,) = [o for o in by_kind(objs, "ServiceMonitor") if o["metadata"]["name"] == "airloop-redis"]
        assert jmespath.search("spec.endpoints[0].[port, path]", sm) == ["metrics", "/metrics"]
        assert sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "redis"

    def test_redis_exporter_values(self):
        digest = "sha256:" + "a" * 64
        objs = render_chart({
            "images": {"redisExporter": {"repository": "registry.example/redis_exporter", "tag": "v1.88.0",
                                         "digest": digest}},
            "feast": {"redis": {"exporter": {"port": 9200, "resources": {
                "requests": {"cpu": "20m", "memory": "48Mi"}, "limits": {"cpu": "200m", "memory": "96Mi"}}}}},
        })
        sts = by_kind(objs, "StatefulSet", "airloop-redis")[0]
        exporter = jmespath.search("spec.template.spec.containers[?name=='redis-exporter'] | [0]", sts)
        assert exporter["image"] == f"registry.example/redis_exporter@{digest}"
        assert "--web.listen-address=:9200" in exporter["args"]
        assert exporter["resources"]["limits"] == {"cpu": "200m", "memory": "96Mi"}
        svc = by_kind(objs, "Service", "airloop-redis")[0]
        assert jmespath.search("spec.ports[?name=='metrics'].port", svc) == [9200]
        # switched off: no sidecar, no port, no monitor
        off = render_chart({"feast": {"redis": {"exporter": {"enabled": False}}}})
        sts = by_kind(off, "StatefulSet", "airloop-redis")[0]
        assert [c["name"] for c in sts["spec"]["template"]["spec"]["containers"]] == ["redis"]
        assert jmespath.search("spec.ports[].name", by_kind(off, "Service", "airloop-redis")[0]) == ["redis"]
        assert not [o for o in by_kind(off, "ServiceMonitor") if o["metadata"]["name"] == "airloop-redis"]
        # external Redis: nothing of the in-chart one
        ext = render_chart({"feast": {"redis": {"enabled": False, "externalUrl": "redis.example:6379"}}})
        assert not [o for o in ext if o["metadata"]["name"] == "airloop-redis"]


class TestRay:
    def test_token_auth_and_autoscaling(self):
        (rc,) = render_chart(PRODUCTION, ["templates/ray/ray-raycluster.yaml"])
        assert jmespath.search("spec.authOptions.mode", rc) == "token"
        assert jmespath.search("spec.enableInTreeAutoscaling", rc) is True
        assert jmespath.search("spec.workerGroupSpecs[0].[minReplicas, maxReplicas]", rc) == [2, 16]


SELDON_KINDS = ("Server", "HorizontalPodAutoscaler", "PodMonitor", "SeldonRuntime")


def seldon_objects(objs, namespace):
    """The chart's Seldon serving objects in one namespace (the Ray PodMonitor is not one)."""
    return [o for o in objs if o["kind"] in SELDON_KINDS and o["metadata"]["namespace"] == namespace
            and not o["metadata"]["name"].endswith("-ray")]


class TestServing:
    def test_server_readiness_and_hpa(self):
        objs = render_chart()
        (server,) = by_kind(objs, "Server")
        assert server["metadata"]["namespace"] == "airloop-demo"
        path = jmespath.search("spec.podSpec.containers[?name=='mlserver'].readinessProbe.httpGet.path | [0]", server)
        assert path == "/v2/health/ready"
        (hpa,) = by_kind(objs, "HorizontalPodAutoscaler")
        assert jmespath.search("spec.scaleTargetRef", hpa) == {
            "apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Server", "name": "airloop-mlserver"}

    def test_each_tenant_gets_its_own_server_hpa_podmonitor_and_runtime(self):
        """Seldon Core 2 schedules a Model only onto a Server in the Model's namespace and
        needs the runtime there: one of each per tenant namespace, none in the release's."""
        objs = render_chart(TWO_TENANTS)
        assert not [o for o in objs if o["kind"] in ("Server", "SeldonRuntime", "HorizontalPodAutoscaler")
                    and o["metadata"]["namespace"] == NAMESPACE]
        assert jmespath.search(f"[?kind=='PodMonitor' && metadata.namespace=='{NAMESPACE}'].metadata.name",
                               objs) == ["airloop-ray"]
        for tenant in ("alpha", "beta"):
            ns = f"airloop-{tenant}"
            mine = seldon_objects(objs, ns)
            assert sorted(o["kind"] for o in mine) == sorted(SELDON_KINDS), ns
            (server,) = by_kind(mine, "Server")
            assert server["metadata"]["name"] == "airloop-mlserver"  # serving.serverName
            assert jmespath.search("spec.[serverConfig, replicas, minReplicas, maxReplicas]", server) == [
                "mlserver", 1, 1, 4]
            assert jmespath.search("spec.extraCapabilities", server) == ["mlflow"]
            (hpa,) = by_kind(mine, "HorizontalPodAutoscaler")
            assert jmespath.search("spec.scaleTargetRef.[kind, name]", hpa) == ["Server", "airloop-mlserver"]
            assert jmespath.search("spec.[minReplicas, maxReplicas]", hpa) == [1, 4]
            (monitor,) = by_kind(mine, "PodMonitor")
            assert jmespath.search("spec.selector.matchLabels", monitor) == {"seldon-server-name": "airloop-mlserver"}
            assert "namespaceSelector" not in monitor["spec"]  # its own namespace only
            (runtime,) = by_kind(mine, "SeldonRuntime")
            assert jmespath.search("spec.seldonConfig", runtime) == "default"
            cm = [o for o in by_kind(objs, "ConfigMap", "airloop-runtime-env") if o["metadata"]["namespace"] == ns]
            assert jmespath.search("[0].data.AIRLOOP_SELDON_SERVER", cm) == server["metadata"]["name"]
            assert jmespath.search("[0].data.AIRLOOP_NAMESPACE", cm) == ns

    def test_new_objects_are_validated_against_their_crds(self):
        from chart_utils import crd_schema

        objs = render_chart(TWO_TENANTS)
        assert crd_schema("mlops.seldon.io/v1alpha1", "SeldonRuntime") is not None
        runtimes = by_kind(objs, "SeldonRuntime")
        assert len(runtimes) == 2
        for obj in [o for o in objs if o["kind"] in SELDON_KINDS]:
            validate_object(obj)
        broken = json.loads(json.dumps(runtimes[0]))
        del broken["spec"]["seldonConfig"]
        with pytest.raises(jsonschema.ValidationError, match="seldonConfig"):
            validate_object(broken)
        broken = json.loads(json.dumps(runtimes[0]))
        broken["spec"]["overrides"][0]["replica"] = 2
        with pytest.raises(jsonschema.ValidationError, match="replica"):
            validate_object(broken)

    def test_server_sidecars_meet_restricted_with_resources(self):
        """Seldon's ServerConfig adds agent and rclone containers; the Server merges the
        restricted security context and requests/limits into them by name."""
        objs = render_chart({"serving": {"seldonSidecars": {"agent": {
            "requests": {"cpu": "300m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}}}})
        (server,) = by_kind(objs, "Server")
        containers = jmespath.search("spec.podSpec.containers", server)
        assert [c["name"] for c in containers] == ["mlserver", "agent", "rclone"]
        assert jmespath.search("[?name=='agent'].resources.limits | [0]", containers) == {"cpu": "2", "memory": "2Gi"}
        assert not container_problems(server["spec"]["podSpec"], "Server")

    def test_deploy_step_model_lands_on_a_rendered_server(self):
        """A Model built by the deploy step from a tenant's airloop-runtime-env names a
        Server that the chart renders in the Model's namespace."""
        from dataclasses import replace

        from airloop.core.settings import load as load_settings
        from airloop.core.spec import load_spec, parse_spec
        from airloop.runtime.serving_targets import kubernetes as serving

        objs = render_chart({**TWO_TENANTS, "serving": {"serverName": "ml-shared"}})
        servers = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in by_kind(objs, "Server")}
        assert servers == {("airloop-alpha", "ml-shared"), ("airloop-beta", "ml-shared")}
        base = load_spec("churn", CHART.parents[1] / "include" / "projects")
        for tenant in ("alpha", "beta"):
            raw = base.model_dump(mode="json")
            raw["tenant"] = tenant
            raw["deployment"].update(target="seldon", canary_traffic=0)
            spec = parse_spec(raw, base.path)
            (cm,) = [o for o in by_kind(objs, "ConfigMap", "airloop-runtime-env")
                     if o["metadata"]["namespace"] == f"airloop-{tenant}"]
            options = serving.options_from_settings(load_settings(cm["data"]))
            built = serving.build_resources(spec, 2, "s3://bucket/model", None, options=options)
            (model,) = [o for o in built if o["kind"] == "Model"]
            assert (jmespath.search("metadata.namespace", model), jmespath.search("spec.server", model)) in servers
            assert model["metadata"]["namespace"] == f"airloop-{tenant}"
            # without AIRLOOP_NAMESPACE the deploy step falls back to airloop-<tenant> too
            fallback = serving.build_resources(
                spec, 2, "s3://bucket/model", None, options=replace(options, namespace=None))
            assert (fallback[0]["metadata"]["namespace"], fallback[0]["spec"]["server"]) in servers

    def test_runtime_and_target_switches(self):
        runtime = render_chart({"serving": {"seldonRuntime": {
            "seldonConfig": "airloop-restricted", "serviceType": "LoadBalancer",
            "overrides": [{"name": "seldon-envoy", "replicas": 2, "serviceType": "LoadBalancer"}]}}},
            ["templates/serving/serving-seldonruntime.yaml"])
        assert jmespath.search("[0].spec", runtime) == {
            "seldonConfig": "airloop-restricted",
            "overrides": [{"name": "seldon-envoy", "replicas": 2, "serviceType": "LoadBalancer"}],
            "config": {"serviceConfig": {"serviceType": "LoadBalancer"}}}
        # default: Seldon's usage reporting and the Kafka-only components are off
        (default,) = render_chart(show_only=["templates/serving/serving-seldonruntime.yaml"])
        assert jmespath.search("spec.overrides[?disable].name", default) == [
            "hodometer", "seldon-modelgateway", "seldon-pipelinegateway", "seldon-dataflow-engine"]
        assert jmespath.search("spec.config.serviceConfig.serviceType", default) == "ClusterIP"
        off = render_chart({"serving": {"seldonRuntime": {"enabled": False}}})
        assert not by_kind(off, "SeldonRuntime") and len(by_kind(off, "Server")) == 1
        for values in ({"serving": {"target": "kserve"}}, {"serving": {"enabled": False}}):
            objs = render_chart({**TWO_TENANTS, **values})
            assert not [o for o in objs if o["kind"] in ("Server", "SeldonRuntime", "HorizontalPodAutoscaler")]
            assert jmespath.search("[?kind=='PodMonitor'].metadata.name", objs) == ["airloop-ray"]
            assert not [o for o in by_kind(objs, "NetworkPolicy") if o["metadata"]["name"].startswith("seldon-")]

    def test_network_policies_allow_seldon_traffic(self):
        peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
                 {"ipBlock": {"cidr": "10.20.0.0/16"}}]
        objs = render_chart({**TWO_TENANTS, "serving": {"predictionIngressFrom": peers}})
        for ns in ("airloop-alpha", "airloop-beta"):
            pols = {o["metadata"]["name"]: o for o in by_kind(objs, "NetworkPolicy") if o["metadata"]["namespace"] == ns}
            # scheduler <-> agent <-> envoy <-> server pods: same namespace, both directions
            allow = pols["airloop-allow"]["spec"]
            assert {"podSelector": {}} in jmespath.search("ingress[].from[]", allow)
            assert {"podSelector": {}} in jmespath.search("egress[].to[]", allow)
            sched = pols["seldon-scheduler-from-operator"]["spec"]
            assert sched["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "seldon-scheduler"}}
            assert jmespath.search("ingress[0].from[0].namespaceSelector.matchLabels", sched) == {
                "kubernetes.io/metadata.name": "seldon-system"}
            assert jmespath.search("ingress[0].ports[].port", sched) == [9004, 9044]
            envoy = pols["seldon-envoy-predictions"]["spec"]
            assert envoy["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "seldon-envoy"}}
            assert jmespath.search("ingress[0].from", envoy) == peers
            assert jmespath.search("ingress[0].ports[].port", envoy) == [9000]
            for pol in pols.values():
                validate_object(pol)
        # defaults: no outside prediction clients; no operator namespace: no scheduler allowance
        objs = render_chart({"serving": {"seldonOperatorNamespace": ""}})
        names = {o["metadata"]["name"] for o in by_kind(objs, "NetworkPolicy")}
        assert names == {"default-deny", "airloop-allow"}

    @pytest.mark.parametrize("values", [{}, PRODUCTION, TWO_TENANTS])
    def test_quota_holds_min_server_pods_and_reserve(self, values):
        """What check-values enforces, recomputed here: minReplicas Server pods plus
        tenantDefaults.quotaReserve fit every tenant's ResourceQuota."""
        import helm_python as helm

        def qty(v):
            units = {"m": 1e-3, "": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
            num = v.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
            return float(num) * units[v[len(num):]]

        with helm.Chart.load(CHART) as chart:
            merged = chart.merge_values(values)
        s, reserve = merged["serving"], merged["tenantDefaults"]["quotaReserve"]
        objs = render_chart(values)
        (server, *_) = by_kind(objs, "Server")
        containers = jmespath.search("spec.podSpec.containers[].resources", server)
        for quota in by_kind(objs, "ResourceQuota"):
            hard = quota["spec"]["hard"]
            for key, field in (("requestsCpu", "requests.cpu"), ("requestsMemory", "requests.memory"),
                               ("limitsCpu", "limits.cpu"), ("limitsMemory", "limits.memory")):
                part, res = field.split(".")
                pod = sum(qty(c[part][res]) for c in containers)
                assert s["hpa"]["minReplicas"] * pod + qty(reserve[key]) <= qty(hard[field]), (quota["metadata"], field)
                # the chart defaults also leave the HPA its whole range
                if not values:
                    assert s["hpa"]["maxReplicas"] * pod + qty(reserve[key]) <= qty(hard[field]), field
            assert s["hpa"]["minReplicas"] + int(reserve["pods"]) <= int(hard["pods"])


class TestTenants:
    def test_two_tenants(self):
        objs = render_chart(TWO_TENANTS)
        names = {o["metadata"]["name"] for o in by_kind(objs, "Namespace")}
        assert names == {"airloop-alpha", "airloop-beta"}
        for ns in by_kind(objs, "Namespace"):
            labels = ns["metadata"]["labels"]
            for mode in ("enforce", "audit", "warn"):
                assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        for tenant in ("alpha", "beta"):
            ns = f"airloop-{tenant}"
            inns = [o for o in objs if o["metadata"].get("namespace") == ns]
            kinds = {o["kind"] for o in inns}
            assert {"ServiceAccount", "Role", "RoleBinding", "ResourceQuota", "LimitRange",
                    "NetworkPolicy", "ConfigMap"} <= kinds
            cm = next(o for o in inns if o["metadata"]["name"] == "airloop-runtime-env")
            assert cm["data"]["AIRLOOP_MODE"] == "kubernetes"
            assert cm["data"]["AIRLOOP_RAY_ADDRESS"].startswith("ray://airloop-ray-head-svc.")
            assert cm["data"]["MLFLOW_TRACKING_URI"] == "http://airloop-mlflow.airloop-system.svc:5000"
            assert cm["data"]["DO_NOT_TRACK"] == "true"
            deny = next(o for o in inns if o["metadata"]["name"] == "default-deny")
            assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
            role = next(o for o in inns if o["kind"] == "Role")
            res = jmespath.search("rules[].resources[]", role)
            assert {"pods", "pods/log", "configmaps", "models", "inferenceservices"} <= set(res)
        quota = [o for o in by_kind(objs, "ResourceQuota") if o["metadata"]["namespace"] == "airloop-beta"][0]
        assert quota["spec"]["hard"]["pods"] == "10"

    def test_model_storage_secrets_reach_the_deploy_step(self):
        """serving.storageSecret: Seldon's via AIRLOOP_STORAGE_SECRET (Model.spec.secretName),
        KServe's on the predictors' ServiceAccount named by AIRLOOP_SERVICE_ACCOUNT."""
        objs = render_chart(PRODUCTION)
        cm = by_kind(objs, "ConfigMap", "airloop-runtime-env")[0]
        assert cm["data"]["AIRLOOP_STORAGE_SECRET"] == "airloop-model-storage-rclone"
        account = cm["data"]["AIRLOOP_SERVICE_ACCOUNT"]
        (sa,) = [o for o in by_kind(objs, "ServiceAccount", account)
                 if o["metadata"]["namespace"] == cm["metadata"]["namespace"]]
        assert sa["secrets"] == [{"name": "airloop-model-storage"}]
        assert sa["automountServiceAccountToken"] is False
        # the model servers' account has no API permissions
        bound = jmespath.search("[?kind=='RoleBinding'].subjects[].name", objs)
        assert account not in bound
        # default values: no secret, nothing set
        default = render_chart()
        cm = by_kind(default, "ConfigMap", "airloop-runtime-env")[0]
        assert "AIRLOOP_STORAGE_SECRET" not in cm["data"]
        assert "secrets" not in by_kind(default, "ServiceAccount", "airloop-model")[0]


class TestObservability:
    def test_rules_dashboards_monitors(self):
        objs = render_chart()
        exprs = jmespath.search("[?kind=='PrometheusRule'].spec.groups[].rules[].expr", objs)
        assert any("airloop_drift_share" in e for e in exprs)
        assert any("airloop_retrain_decision" in e for e in exprs)
        assert any("dagrun" in e and "failed" in e for e in exprs)
        assert any("model_infer_request_failure" in e for e in exprs)
        dash = [o for o in by_kind(objs, "ConfigMap") if o["metadata"]["labels"].get("grafana_dashboard") == "1"]
        assert dash and json.loads(next(iter(dash[0]["data"].values())))["panels"]
        assert {"ServiceMonitor", "PodMonitor"} <= {o["kind"] for o in objs}


class TestAirflowValues:
    def test_airflow_block_validates_against_official_schema(self):
        import helm_python as helm

        schema = json.loads((SHARED / "airflow-chart" / "values.schema.json").read_text())
        with helm.Chart.load(CHART) as chart:
            for values in ({}, PRODUCTION):
                block = chart.merge_values(values)["airflow"]
                jsonschema.Draft7Validator(schema).validate(block)
                assert block["executor"] == "KubernetesExecutor"
                assert block["dags"]["gitSync"]["enabled"] is True
                assert block["elasticsearch"]["enabled"] is True
                assert block["statsd"]["enabled"] is True

    def test_wrong_airflow_value_fails_official_schema(self):
        schema = json.loads((SHARED / "airflow-chart" / "values.schema.json").read_text())
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"executor": "LocalExecutor!", "dags": {"gitSync": {"enabled": "yes"}}}, schema)


class TestValuesSchema:
    def test_values_yaml_validates(self):
        schema = json.loads((CHART / "values.schema.json").read_text())
        jsonschema.Draft7Validator.check_schema(schema)
        jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)

    @pytest.mark.parametrize(
        "values, named",
        [
            ({"mlflow": {"replicas": "two"}}, "replicas"),
            ({"mlflow": {"replica": 2}}, "replica"),
            ({"ray": {"workers": {"maxReplicas": "many"}}}, "maxReplicas"),
            ({"tenants": [{"name": "Bad_Name"}]}, "name"),
            ({"mlflow": {"metrics": {"enable": False}}}, "enable"),
            ({"images": {"redisExporter": {"repository": "oliver006/redis_exporter", "tag": ""}}}, "tag"),
            ({"feast": {"redis": {"exporter": {"port": "9121"}}}}, "port"),
            ({"serving": {"storageSecret": {"seldon": "S3_Creds"}}}, "seldon"),
            ({"feast": {"redis": {"enabled": False, "externalUrl": "redis://redis.example:6379"}}},
             "externalUrl"),
            ({"serving": {"storageSecret": "s3-creds"}}, "storageSecret"),
            ({"feast": {"redis": {"exporter": {"resources": {"limits": {"memory": "64 Mi"}}}}}}, "memory"),
            ({"mlflow": {"metrics": {"basicAuth": {"usernameKey": "user name"}}}}, "usernameKey"),
            ({"mlflow": {"metrics": {"basicAuth": {"secretName": "Scraper_Secret"}}}}, "secretName"),
            ({"serving": {"target": "triton"}}, "target"),
            ({"serving": {"seldonRuntime": {"overrides": [{"name": "seldon-kafka", "disable": True}]}}}, "name"),
            ({"serving": {"seldonRuntime": {"serviceType": "Ingress"}}}, "serviceType"),
            ({"serving": {"seldonRuntime": {"seldonConfig": "Default"}}}, "seldonConfig"),
            ({"serving": {"seldonSidecars": {"envoy": {"requests": {"cpu": "200m", "memory": "1Gi"}}}}}, "envoy"),
            ({"serving": {"seldonSidecars": {"rclone": {"limits": {"cpu": "half"}}}}}, "cpu"),
            ({"serving": {"predictionIngressFrom": [{"namespace": "ingress-nginx"}]}}, "namespace"),
            ({"tenantDefaults": {"quota": {"limitsCpu": "lots"}}}, "limitsCpu"),
            ({"tenants": [{"name": "a", "quota": {"pods": "ten"}}]}, "pods"),
        ],
    )
    def test_bad_values_rejected_naming_the_key(self, values, named):
        import helm_python as helm

        with pytest.raises(helm.HelmError, match=named):
            render_chart(values)


class TestCheckValues:
    @pytest.mark.parametrize(
        "values, message",
        [
            ({**PRODUCTION, "airflow": {"config": {"core": {
                "auth_manager": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"}}}},
             "SimpleAuthManager"),
            ({**PRODUCTION, "airflow": {"config": {
                "core": PRODUCTION["airflow"]["config"]["core"],
                "simple_auth_manager": {"simple_auth_manager_all_admins": "True"}}}},
             "all_admins"),
            ({"production": True}, "SimpleAuthManager"),
            ({"feast": {"redis": {"enabled": False}}}, "externalUrl"),
            ({"tenants": [{"name": "a"}, {"name": "a"}]}, "duplicate tenant"),
            ({"ray": {"workers": {"minReplicas": 5, "maxReplicas": 2}}}, "minReplicas"),
            ({"feast": {"redis": {"exporter": {"port": 6379}}}}, "feast.redis.exporter.port 6379"),
            # tenant quotas too small for the Seldon Server's minReplicas pods + quotaReserve
            ({"tenantDefaults": {"quota": {"requestsMemory": "4Gi"}}},
             r'tenant "demo": ResourceQuota requests.memory 4Gi is less than the Seldon Server needs'),
            ({"tenants": [{"name": "a"}, {"name": "b", "quota": {"limitsCpu": "5"}}]},
             r'tenant "b": ResourceQuota limits.cpu 5 .* = 7600m'),
            ({"serving": {"hpa": {"minReplicas": 3}}, "tenantDefaults": {"quota": {"requestsCpu": "2999m"}}},
             r"requests.cpu 2999m .*minReplicas 3 x 750m"),
            ({"tenantDefaults": {"quota": {"limitsMemory": "8.8G"}}}, r"limits.memory 8.8G"),
            ({"tenants": [{"name": "a", "quota": {"pods": "3"}}]}, r'tenant "a": ResourceQuota pods 3'),
            ({"serving": {"resources": {"requests": {"cpu": "1.5.0", "memory": "1Gi"},
                                        "limits": {"cpu": "2", "memory": "2Gi"}}}}, "not a Kubernetes quantity"),
        ],
    )
    def test_bad_combinations_fail_rendering(self, values, message):
        import helm_python as helm

        with pytest.raises(helm.HelmError, match=message):
            render_chart(values, airflow=True)


    @pytest.mark.parametrize("values", [
        {"serving": {"hpa": {"minReplicas": 3}}, "tenantDefaults": {"quota": {"requestsCpu": "3"}}},
        {"serving": {"target": "kserve"}, "tenantDefaults": {"quota": {"requestsMemory": "1Gi"}}},
        {"serving": {"enabled": False}, "tenants": [{"name": "a", "quota": {"pods": "1"}}]},
    ])
    def test_quota_check_boundaries(self, values):
        """Exactly enough passes; without Seldon Servers there is nothing to check."""
        assert render_chart(values, airflow=True)


class TestValidatorIsStrict:
    def test_duplicate_mapping_key_fails_rendering_parse(self):
        from chart_utils import _UniqueKeyLoader

        with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'app'"):
            yaml.load("metadata:\n  labels:\n    app: a\n    app: b\n", Loader=_UniqueKeyLoader)
        assert yaml.load("a: {b: 1}\nc: [{b: 2}]\n", Loader=_UniqueKeyLoader) == {"a": {"b": 1}, "c": [{"b": 2}]}

    def test_broken_manifests_fail(self):
        import copy

        objs = render_chart()
        dep = copy.deepcopy(by_kind(objs, "Deployment", "airloop-mlflow")[0])
        dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
        with pytest.raises(Exception, match="imagePullPolicyy"):
            validate_object(dep)
        rc = copy.deepcopy(by_kind(objs, "RayCluster")[0])
        rc["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "4"
        with pytest.raises(jsonschema.ValidationError):
            validate_object(rc)
        pod = copy.deepcopy(pod_specs(by_kind(objs, "Deployment", "airloop-feast")[0])[0])
        pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
        del pod["containers"][0]["resources"]["limits"]
        problems = container_problems(pod, "feast")
        assert any("allowPrivilegeEscalation" in p for p in problems)
        assert any("limits.cpu" in p for p in problems)
