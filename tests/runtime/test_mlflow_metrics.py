"""MLflow's Prometheus exporter (``mlflow server --expose-prometheus``), for real.

* The local platform: the exact ``mlflow server`` argv and environment of the ``mlflow``
  component of ``airloop up`` (:func:`airloop.devstack.components.plan`, on the
  machine's PostgreSQL) serve Prometheus text at ``/metrics`` that counts a tracking
  call.
* The Helm chart's server (``--app-name basic-auth``, an explicit ``--allowed-hosts``):
  ``/metrics`` is *not* exempt from MLflow's basic auth (so the chart's ServiceMonitor
  sends credentials) and is subject to the Host check (so the chart allows the pod's
  own IP, the address Prometheus scrapes).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import free_port, stop, venv_bin, wait_http  # noqa: E402

PG_URL = os.environ.get("AIRLOOP_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REQUESTS = re.compile(r'^mlflow_http_request_total\{([^}]*)\} ([0-9.e+]+)$', re.M)


def _call(url, *, method="GET", body=None, host=None, user=None):
    """(status, text) of one HTTP request; never raises for HTTP errors."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if host:
        req.add_header("Host", host)
    if user:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(user).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _requests_total(text: str, method: str, status: str) -> float:
    """Sum of ``mlflow_http_request_total`` samples with this method and status."""
    total = 0.0
    for labels, value in REQUESTS.findall(text):
        if f'method="{method}"' in labels and f'status="{status}"' in labels:
            total += float(value)
    return total


def _serve(argv, env, log_path, url):
    log = open(log_path, "w")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"{url}/health", timeout=180, proc=proc)
    except Exception:
        stop(proc)
        log.close()
        raise AssertionError(f"mlflow server did not start:\n{Path(log_path).read_text()[-3000:]}")
    return proc, log


# -- the local platform's mlflow component ----------------------------------------------
@pytest.fixture(scope="module")
def platform_mlflow(tmp_path_factory):
    import psycopg2

    from airloop.core import settings as config
    from airloop.devstack import components as C

    home = tmp_path_factory.mktemp("metrics-home")
    settings = config.load(home=home, mlflow_port=free_port())
    prefix = f"airloop_test_metrics_{uuid.uuid4().hex[:8]}"
    database_url = f"{PG_URL}/{prefix}"
    db = C.database(settings, database_url)
    conn = psycopg2.connect(**db.admin_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{db.mlflow_db}"')
    try:
        (comp,) = [c for c in C.plan(settings, database_url, False) if c.name == "mlflow"]
        env = {**os.environ, **C.platform_env(settings, database_url, False), **comp.env}
        proc, log = _serve(comp.argv, env, home / "mlflow.log", comp.url)
        try:
            yield {"comp": comp, "settings": settings, "url": comp.url}
        finally:
            stop(proc)
            log.close()
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{db.mlflow_db}" WITH (FORCE)')
        conn.close()


def test_platform_component_exposes_prometheus_metrics(platform_mlflow):
    from airloop.devstack import components as C

    comp, url = platform_mlflow["comp"], platform_mlflow["url"]
    argv = comp.argv
    assert argv[argv.index("--workers") + 1] == "1"
    metrics_dir = C.mlflow_metrics_dir(platform_mlflow["settings"])
    assert argv[argv.index("--expose-prometheus") + 1] == str(metrics_dir)
    assert comp.env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"

    status, before = _call(f"{url}/metrics")
    assert status == 200, before
    created_before = _requests_total(before, "POST", "200")
    status, body = _call(f"{url}/api/2.0/mlflow/experiments/create", method="POST",
                         body={"name": f"metrics-{uuid.uuid4().hex[:6]}"})
    assert status == 200 and json.loads(body)["experiment_id"], body

    status, text = _call(f"{url}/metrics")
    assert status == 200
    assert "# TYPE mlflow_http_request_total counter" in text
    assert "# TYPE mlflow_http_request_duration_seconds histogram" in text
    assert _requests_total(text, "POST", "200") == created_before + 1
    # prometheus_client's multiprocess files live in the component's directory
    assert any(p.name.startswith("counter_") for p in metrics_dir.iterdir())


# -- the chart's server: basic auth and the Host check ---------------------------------
@pytest.fixture(scope="module")
def auth_mlflow(tmp_path_factory):
    work = tmp_path_factory.mktemp("metrics-auth")
    port = free_port()
    password = uuid.uuid4().hex
    ini = work / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{work / 'auth.db'}\n"
        "admin_username = admin\n"
        f"admin_password = {password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        # required by the basic-auth app (CSRF); the chart takes it from the MLflow Secret
        "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "HOME": str(work),
    }
    # Like the chart: basic auth, and only named hosts (here: localhost, standing in for
    # the pod IP the chart adds) pass the Host check; 127.0.0.1 is deliberately absent.
    argv = [
        venv_bin("runtime", "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
        "--artifacts-destination", str(work / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--app-name", "basic-auth",
        f"--allowed-hosts=localhost:{port},localhost",
        f"--expose-prometheus={work / 'prometheus'}",
    ]
    url = f"http://127.0.0.1:{port}"
    proc, log = _serve(argv, env, work / "mlflow.log", url)  # /health: no auth, no Host check
    try:
        yield {"url": url, "host": f"localhost:{port}", "admin": ("admin", password), "port": port}
    finally:
        stop(proc)
        log.close()


def test_basic_auth_server_metrics_need_credentials_and_an_allowed_host(auth_mlflow):
    url, host, admin = auth_mlflow["url"], auth_mlflow["host"], auth_mlflow["admin"]
    status, _ = _call(f"{url}/metrics", host=host)
    assert status == 401, "MLflow's basic-auth app protects /metrics: the scrape needs credentials"
    status, body = _call(f"{url}/api/2.0/mlflow/experiments/create", method="POST",
                         body={"name": "scraped"}, host=host, user=admin)
    assert status == 200, body
    status, text = _call(f"{url}/metrics", host=host, user=admin)
    assert status == 200, text
    assert _requests_total(text, "POST", "200") >= 1
    # Prometheus scrapes the pod by IP: a Host not in --allowed-hosts is refused even
    # with valid credentials, hence $(POD_IP) in the chart's --allowed-hosts.
    status, _ = _call(f"{url}/metrics", host=f"10.11.12.13:{auth_mlflow['port']}", user=admin)
    assert status in (400, 403)
