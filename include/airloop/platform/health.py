"""Health of each component, read from the real thing (not from the pid alone).

Airflow: the body of ``/api/v2/monitor/health`` (metadatabase, scheduler, triggerer,
dag_processor). MLflow: ``/health``. MLServer: ``/v2/health/ready``. PostgreSQL: a
psycopg2 connection. Ray head: its GCS port; Ray worker: ``ray status`` counts two
live nodes.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request

from airloop.platform.components import Component


def _get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read() or b""


def airflow_health(base_url: str) -> dict | None:
    """The parsed ``/api/v2/monitor/health`` body, or None when unreachable."""
    try:
        status, body = _get(f"{base_url}/api/v2/monitor/health")
        return json.loads(body) if status == 200 else None
    except (OSError, ValueError):
        return None


def check(comp: Component, cache: dict) -> tuple[bool, str]:
    """Return ``(healthy, detail)`` for one component. ``cache`` is shared across the
    components of one round so Airflow's health body is fetched once."""
    kind = comp.health
    try:
        if kind == "postgres":
            import psycopg2

            parts = urllib.parse.urlsplit(comp.url)
            conn = psycopg2.connect(
                host=parts.hostname, port=parts.port, user=parts.username or "postgres",
                dbname="postgres", connect_timeout=3,
            )
            conn.close()
            return True, "accepting connections"
        if kind.startswith("http:"):
            status, _ = _get(comp.url + kind[5:])
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
        if kind == "ray-nodes":
            parts = urllib.parse.urlsplit(comp.url)
            ray = comp.argv[0]
            out = subprocess.run(
                [ray, "status", "--address", f"{parts.hostname}:{parts.port}"],
                capture_output=True, text=True, timeout=60,
            )
            active = out.stdout.split("Pending:")[0] if "Active:" in out.stdout else ""
            nodes = len(re.findall(r"\bnode_[0-9a-f]+", active))
            return nodes >= 2, f"{nodes} live nodes"
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return False, type(exc).__name__
    except Exception as exc:  # psycopg2.OperationalError and friends
        return False, str(exc).strip().splitlines()[0][:80] if str(exc).strip() else type(exc).__name__
    return False, f"unknown health check {kind}"
