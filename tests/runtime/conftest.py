"""Fixtures for tests run in the runtime environment (steps and services).

Services are real: an MLflow tracking server on the machine's PostgreSQL (a fresh
database per test session), Feast stores on disk, Ray in local mode. Each test
session gets its own AIRLOOP_HOME under pytest's tmp dir.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import REPO, free_port, stop, venv_bin, wait_http  # noqa: E402

PG_URL = os.environ.get("AIRLOOP_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


@pytest.fixture(scope="session")
def airloop_home(tmp_path_factory) -> Path:
    """A private AIRLOOP_HOME for the test session, exported to steps."""
    home = tmp_path_factory.mktemp("airloop-home")
    os.environ["AIRLOOP_HOME"] = str(home)
    os.environ["AIRLOOP_PROJECTS_DIR"] = str(REPO / "include" / "projects")
    for key, value in {
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
    }.items():
        os.environ[key] = value
    return home


def _create_db(name: str) -> str:
    import psycopg2

    conn = psycopg2.connect(f"{PG_URL}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"{PG_URL.replace('postgresql://', 'postgresql+psycopg2://')}/{name}"


def _drop_db(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(f"{PG_URL}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture(scope="session")
def mlflow_server(airloop_home, tmp_path_factory):
    """A real MLflow tracking + registry server on PostgreSQL; yields its URI."""
    db = f"airloop_test_mlflow_{uuid.uuid4().hex[:8]}"
    backend = _create_db(db)
    artifacts = tmp_path_factory.mktemp("mlartifacts")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(artifacts / "server.log", "w")
    proc = subprocess.Popen(
        [
            venv_bin("runtime", "mlflow"), "server",
            "--backend-store-uri", backend,
            "--artifacts-destination", str(artifacts),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--allowed-hosts", f"127.0.0.1:{port},localhost:{port},127.0.0.1,localhost",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", timeout=120, proc=proc)
        os.environ["MLFLOW_TRACKING_URI"] = uri
        yield uri
    finally:
        stop(proc)
        log.close()
        _drop_db(db)
