"""Health of each component, read from the real thing (not from the pid alone).

Airflow: the body of ``/api/v2/monitor/health`` (metadatabase, scheduler, triggerer,
dag_processor). MLflow: ``/health``. MLServer: ``/v2/health/ready``. PostgreSQL: a
psycopg2 connection. Ray head: its GCS port answers and its ``ray start`` reported the
node started (Ray prints that only after the GCS lists the node). Ray worker: the
same, plus the GCS node table (:func:`ray_nodes`, read at most once per
:data:`RAY_PROBE_TTL` seconds through the runtime environment, which has Ray) lists
at least two ALIVE nodes.

The GCS node table is read by :mod:`airloop.devstack.rayprobe`, run with the runtime
environment's Python (it needs Ray) as a subprocess.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import psycopg2

from airloop.core.errors import AirloopError
from airloop.core.io import http_json
from airloop.devstack.components import Component

#: Seconds a GCS node-table probe is reused (positive and negative alike): a probe
#: costs a Python start with ``import ray`` (~1-4 s of CPU on this machine).
RAY_PROBE_TTL = 5.0
_ray_probes: dict[str, tuple[float, list[dict] | None, str]] = {}


def airflow_health(base_url: str) -> dict | None:
    """The parsed ``/api/v2/monitor/health`` body, or None when unreachable."""
    try:
        status, body = http_json("GET", f"{base_url}/api/v2/monitor/health", timeout=3.0)
    except AirloopError:
        return None
    return body if status == 200 and isinstance(body, dict) else None


def check(comp: Component, cache: dict) -> tuple[bool, str]:
    """Return ``(healthy, detail)`` for one component. ``cache`` is shared across the
    components of one round so Airflow's health body is fetched once."""
    kind = comp.health
    try:
        if kind == "postgres":
            parts = urllib.parse.urlsplit(comp.url)
            conn = psycopg2.connect(
                host=parts.hostname, port=parts.port, user=parts.username or "postgres",
                dbname="postgres", connect_timeout=3,
            )
            conn.close()
            return True, "accepting connections"
        if kind.startswith("http:"):
            status, _ = http_json("GET", comp.url + kind[5:], timeout=3.0)
            return status == 200, f"HTTP {status}"
        if kind == "airflow-api" or kind.startswith("airflow-job:"):
            if "airflow" not in cache:
                cache["airflow"] = airflow_health(comp.url)
            body = cache["airflow"]
            if body is None:
                return False, "api-server not answering"
            key = "metadatabase" if kind == "airflow-api" else kind.split(":", 1)[1]
            status = (body.get(key) or {}).get("status")
            return status == "healthy", f"{key} {status}"
        if kind == "tcp":
            parts = urllib.parse.urlsplit(comp.url)
            with socket.create_connection((parts.hostname, parts.port), timeout=3):
                return True, "GCS port open"
        if kind in ("ray-head", "ray-nodes"):
            parts = urllib.parse.urlsplit(comp.url)
            address = f"{parts.hostname}:{parts.port}"
            with socket.create_connection((parts.hostname, parts.port), timeout=3):
                pass
            # `ray start` prints this only once the GCS lists its node (it polls for it);
            # checking it first keeps the probe (an `import ray`) out of the start-up.
            if comp.log and not ray_start_reported(comp):
                return False, "node starting"
            if kind == "ray-head":
                return True, "head node registered"
            nodes, detail = _probe_ray(comp, address)
            if nodes is None:
                return False, detail
            return len(nodes) >= 2, f"{len(nodes)} live nodes"
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return False, type(exc).__name__
    except Exception as exc:  # psycopg2.OperationalError and friends
        return False, str(exc).strip().splitlines()[0][:80] if str(exc).strip() else type(exc).__name__
    return False, f"unknown health check {kind}"


RAY_STARTED = b"Ray runtime started."
_START_MARK = b"--- airloop: starting "


def ray_start_reported(comp: Component) -> bool:
    """Whether ``ray start`` reported its node started since the supervisor last
    (re)started the component (the supervisor marks each start in the log)."""
    try:
        with open(comp.log, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 262144))
            tail = fh.read()
    except OSError:
        return False
    start = tail.rfind(_START_MARK)
    return tail.find(RAY_STARTED, max(start, 0)) >= 0


def _probe_ray(comp: Component, address: str) -> tuple[list[dict] | None, str]:
    """ALIVE nodes of the cluster at ``address`` (cached :data:`RAY_PROBE_TTL` s), read
    with the Python next to the component's ``ray`` executable."""
    now = time.monotonic()
    cached = _ray_probes.get(address)
    if cached and now - cached[0] < RAY_PROBE_TTL:
        return cached[1], cached[2]
    python = str(Path(comp.argv[0]).with_name("python"))
    try:
        out = subprocess.run(
            [python, "-m", "airloop.devstack.rayprobe", address],
            capture_output=True, text=True, timeout=60,
        )
        if out.returncode == 0:
            nodes = json.loads(out.stdout)
            result = (nodes, f"{len(nodes)} live nodes")
        else:
            lines = (out.stderr or out.stdout).strip().splitlines()
            result = (None, lines[-1][:80] if lines else f"probe exit {out.returncode}")
    except subprocess.TimeoutExpired:
        result = (None, "GCS probe timed out")
    _ray_probes[address] = (time.monotonic(), *result)
    return result
