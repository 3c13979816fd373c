"""The local platform with real processes: `up` -> healthy (Airflow health body) ->
status (text and --json) -> a killed scheduler comes back (restarts=1) -> a taken port
is one clear error -> `down` leaves no process. Plus `up --database-url` against the
machine's PostgreSQL. Every port is free-picked; every run has its own AIRLOOP_HOME.

Run: .venvs/control/bin/python -m pytest tests/platform
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import REPO, free_port  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PG_URL = os.environ.get("AIRLOOP_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
PORT_NAMES = ["postgres", "airflow", "mlflow", "mlserver", "mlserver_grpc",
              "mlserver_metrics", "ray_head", "ray_dashboard"]


def platform_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRLOOP_", "AIRFLOW", "MLFLOW_"))}
    env.update({f"AIRLOOP_{n.upper()}_PORT": str(free_port()) for n in PORT_NAMES})
    env["AIRLOOP_HOME"] = str(home)
    env["AIRLOOP_PROJECTS_DIR"] = str(REPO / "include" / "projects")
    return env


def airloop(env: dict, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    """The platform commands, as `airloop <args>` runs them (control environment)."""
    return subprocess.run(
        [str(REPO / ".venvs" / "control" / "bin" / "python"), "-m", "airloop.devstack", *args],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=str(REPO),
    )


def state_of(home: Path) -> dict:
    return json.loads((home / "run" / "state.json").read_text())


def live_platform_pids(home: Path) -> list[int]:
    """Processes in any session the supervisor created, or the supervisor itself."""
    path = home / "run" / "state.json"
    if not path.exists():
        return []
    state = json.loads(path.read_text())
    sessions = set(state.get("sessions", [])) | {state["supervisor"]["pid"]}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and (int(entry) in sessions or int(fields[3]) in sessions):
            found.append(int(entry))
    return found


def get_json(url: str, token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    home = tmp_path_factory.mktemp("plat")
    env = platform_env(home)
    started = time.monotonic()
    up = airloop(env, "up", "--timeout", "360")
    print(f"airloop up (cold): {time.monotonic() - started:.1f}s\n{up.stdout}")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        # What `up` left, before any test kills or restarts a component.
        yield {"home": home, "env": env, "up": up, "state": state_of(home)}
    finally:
        airloop(env, "down")


def test_up_reports_every_component_healthy(platform):
    env, home = platform["env"], platform["home"]
    out = platform["up"].stdout
    for name in ["postgres", "mlflow", "mlserver", "airflow-api-server", "airflow-scheduler",
                 "airflow-dag-processor", "airflow-triggerer"]:
        assert f"{name} " in out
    body = get_json(f"http://127.0.0.1:{env['AIRLOOP_AIRFLOW_PORT']}/api/v2/monitor/health")
    for key in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert body[key]["status"] == "healthy", body
    for info in platform["state"]["components"].values():
        assert info["pid"] and info["restarts"] == 0 and info["status"] == "running"
    with urllib.request.urlopen(f"http://127.0.0.1:{env['AIRLOOP_MLFLOW_PORT']}/health") as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{env['AIRLOOP_MLSERVER_PORT']}/v2/health/ready") as r:
        assert r.status == 200
    settings = json.loads((home / "serving" / "models" / "settings.json").read_text())
    assert settings["http_port"] == int(env["AIRLOOP_MLSERVER_PORT"])
    assert settings["load_models_at_startup"] is True
    for log in ("postgres", "airflow-scheduler", "mlflow", "supervisor"):
        assert (home / "logs" / f"{log}.log").exists()


def test_secrets_and_env_file(platform):
    home, env = platform["home"], platform["env"]
    secrets = home / "airflow" / "secrets.json"
    passwords = home / "airflow" / "simple_auth_manager_passwords.json"
    for path in (secrets, passwords, home / "run" / "env.sh"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert len(json.loads(secrets.read_text())["jwt_secret"].encode()) >= 64
    sourced = subprocess.run(
        ["bash", "-c", f"source {home / 'run' / 'env.sh'} && env"],
        capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]},
    ).stdout
    values = dict(line.split("=", 1) for line in sourced.splitlines() if "=" in line)
    assert values["AIRLOOP_HOME"] == str(home)
    assert values["AIRLOOP_MODE"] == "local"
    assert values["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{env['AIRLOOP_MLFLOW_PORT']}"
    assert values["AIRLOOP_MODEL_SERVER_URL"] == f"http://127.0.0.1:{env['AIRLOOP_MLSERVER_PORT']}"
    assert values["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO / "dags")
    assert values["AIRFLOW__API_AUTH__JWT_SECRET"] == json.loads(secrets.read_text())["jwt_secret"]
    assert values["DO_NOT_TRACK"] == "true"
    assert "AIRLOOP_RAY_ADDRESS" not in values


def test_status_text_json_and_token(platform):
    env, home = platform["env"], platform["home"]
    text = airloop(env, "status")
    assert text.returncode == 0, text.stdout + text.stderr
    password = json.loads((home / "airflow" / "simple_auth_manager_passwords.json").read_text())["admin"]
    assert password in text.stdout and "admin" in text.stdout
    doc = json.loads(airloop(env, "status", "--json").stdout)
    assert doc["healthy"] is True
    assert {r["name"]: r["health"] for r in doc["components"]}["airflow-scheduler"] == "healthy"
    assert doc["airflow"]["password"] == password
    assert doc["memory"]["pss_mb"] > 0
    print("idle memory:", doc["memory"])

    # The Python API others use: a JWT from /auth/token opens the REST API.
    from airloop.api.airflow import fetch_token
    from airloop.core.settings import load
    from airloop.devstack.auth import admin_credentials

    settings = load(environ=env)
    token = fetch_token(f"http://{settings.host}:{settings.ports['airflow']}",
                        *admin_credentials(settings))
    dags = get_json(f"http://127.0.0.1:{env['AIRLOOP_AIRFLOW_PORT']}/api/v2/dags", token)
    assert "total_entries" in dags


def test_up_again_only_reports(platform):
    env, home = platform["env"], platform["home"]
    before = state_of(home)["supervisor"]["pid"]
    again = airloop(env, "up")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert state_of(home)["supervisor"]["pid"] == before


def test_killed_scheduler_comes_back(platform):
    env, home = platform["env"], platform["home"]
    before = state_of(home)["components"]["airflow-scheduler"]
    old = before["pid"]
    os.killpg(old, signal.SIGKILL)
    deadline = time.monotonic() + 180
    info = {}
    while time.monotonic() < deadline:
        info = state_of(home)["components"]["airflow-scheduler"]
        if info["restarts"] == before["restarts"] + 1 and info["pid"] != old:
            doc = json.loads(airloop(env, "status", "--json").stdout)
            row = {r["name"]: r for r in doc["components"]}["airflow-scheduler"]
            if row["health"] == "healthy" and row["pid"] == info["pid"]:
                break
        time.sleep(2)
    else:
        pytest.fail(f"scheduler not back: {info}")
    assert info["last_exit"] == -signal.SIGKILL
    logs = airloop(env, "logs", "scheduler", "-n", "5")
    assert logs.returncode == 0 and logs.stdout.strip()


def test_taken_port_is_one_clear_error_and_starts_nothing(tmp_path):
    env = platform_env(tmp_path / "home")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env["AIRLOOP_MLFLOW_PORT"])))
        taken.listen()
        res = airloop(env, "up", timeout=60)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: mlflow: port ")
    assert env["AIRLOOP_MLFLOW_PORT"] in lines[0] and "AIRLOOP_MLFLOW_PORT" in lines[0]
    assert not (tmp_path / "home" / "run" / "state.json").exists()


def test_down_leaves_no_process(platform):
    env, home = platform["env"], platform["home"]
    assert live_platform_pids(home)
    res = airloop(env, "down")
    assert res.returncode == 0 and "stopped" in res.stdout
    assert live_platform_pids(home) == []
    status = airloop(env, "status")
    assert status.returncode != 0
    assert "down" in status.stdout
    # Back up (a warm start on the same home) for the module's other tests, which may
    # run after this one in any order.
    again = airloop(env, "up", "--timeout", "360")
    assert again.returncode == 0, again.stdout + again.stderr


def test_existing_database_url(tmp_path):
    import psycopg2

    prefix = f"airloop_plat_{uuid.uuid4().hex[:8]}"
    env = platform_env(tmp_path / "home")
    try:
        up = airloop(env, "up", "--database-url", f"{PG_URL}/{prefix}", "--timeout", "360")
        assert up.returncode == 0, up.stdout + up.stderr
        state = state_of(tmp_path / "home")
        assert "postgres" not in state["components"]
        assert not (tmp_path / "home" / "pgdata").exists()
        body = get_json(f"http://127.0.0.1:{env['AIRLOOP_AIRFLOW_PORT']}/api/v2/monitor/health")
        assert body["metadatabase"]["status"] == "healthy"
        conn = psycopg2.connect(f"{PG_URL}/postgres")
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{prefix}%",))
            assert sorted(r[0] for r in cur.fetchall()) == [f"{prefix}_airflow", f"{prefix}_mlflow"]
        conn.close()
    finally:
        airloop(env, "down")
        assert live_platform_pids(tmp_path / "home") == []
        conn = psycopg2.connect(f"{PG_URL}/postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in ("airflow", "mlflow"):
                cur.execute(f'DROP DATABASE IF EXISTS "{prefix}_{db}" WITH (FORCE)')
        conn.close()
