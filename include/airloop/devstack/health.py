"""Health of each component, read from the real thing (not from the pid alone).

Airflow: the body of ``/api/v2/monitor/health`` (metadatabase, scheduler, triggerer,
dag_processor). MLflow: ``/health``. MLServer: ``/v2/health/ready``. PostgreSQL: a
psycopg2 connection. Ray head: its GCS port answers and its ``ray start`` reported the
node started (Ray prints that only after the GCS lists the node). Ray worker: the
same, plus the GCS node table (:func:`ray_nodes`, read at most once per
:data:`RAY_PROBE_TTL` seconds through the runtime environment, which has Ray) lists
at least two ALIVE nodes.

``python -m airloop.devstack.health ray-nodes <host:port>`` (runtime environment)
prints the ALIVE nodes as JSON; the control environment runs it as a subprocess.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from airloop.devstack.components import Component

#: Seconds a GCS node-table probe is reused (positive and negative alike): a probe
#: costs a Python start with ``import ray`` (~1-4 s of CPU on this machine).
RAY_PROBE_TTL = 5.0
_ray_probes: dict[str, tuple[float, list[dict] | None, str]] = {}


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
            [python, "-m", "airloop.devstack.health", "ray-nodes", address],
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


def ray_nodes(address: str, timeout: float = 10.0) -> list[dict]:
    """ALIVE nodes in the GCS node table of the Ray cluster at ``host:port``:
    ``[{"node_id", "is_head", "address", "start_time_ms"}]``.

    Reads the GCS directly (no driver joins the cluster, no dashboard needed). Needs
    the ``ray`` package (runtime environment); raises when the GCS does not answer.
    """
    from ray._raylet import GcsClient

    client = GcsClient(address=address)
    infos = client.get_all_node_info(timeout=timeout)
    alive = []
    for node_id, info in infos.items():
        if info.state != 0:  # GcsNodeInfo.GcsNodeState: 0 ALIVE, 1 DEAD
            continue
        alive.append({
            "node_id": node_id.hex() if hasattr(node_id, "hex") else str(node_id),
            "is_head": bool(info.is_head_node),
            "address": f"{info.node_manager_address}:{info.node_manager_port}",
            "start_time_ms": int(info.start_time_ms),
        })
    return sorted(alive, key=lambda n: (not n["is_head"], n["start_time_ms"]))


def main(argv: list[str] | None = None) -> int:
    """``python -m airloop.devstack.health ray-nodes <host:port>``: the ALIVE nodes as
    JSON on stdout; exit 1 with one line on stderr when the GCS does not answer."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "ray-nodes":
        print("usage: python -m airloop.devstack.health ray-nodes <host:port>", file=sys.stderr)
        return 2
    try:
        nodes = ray_nodes(args[1])
    except Exception as exc:  # GCS unreachable, timeout, version mismatch
        text = str(exc).strip().splitlines()
        print(f"GCS {args[1]}: {text[0][:120] if text else type(exc).__name__}", file=sys.stderr)
        return 1
    print(json.dumps(nodes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
