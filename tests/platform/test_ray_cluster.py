"""`airloop up --ray-cluster` with real processes: a Ray head and a second Ray worker
node on this machine -> the GCS lists two ALIVE nodes -> the train step's Ray Tune
search (``airloop.runtime.training.search.run_search``, connecting through
``AIRLOOP_RAY_ADDRESS``) places its trials on both nodes, read back from Ray's own
actor table -> a killed worker node is restarted by the supervisor and re-joins as a
new node -> `airloop down` leaves no Ray process.

pytest runs in the control environment (no Ray there); everything that talks to Ray
runs in ``.venvs/runtime``, as the platform's Airflow tasks do. Every port is
free-picked and the run has its own AIRLOOP_HOME.

Run: .venvs/control/bin/python -m pytest tests/platform/test_ray_cluster.py -s
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import REPO, free_port, venv_bin  # noqa: E402

# Part of the platform tier. Ray gives each node a fixed 30 s to register with the GCS;
# on a 2-core machine saturated by other work (load average 8+) a node can miss that,
# and the supervisor then restarts it with backoff: the test waits for both nodes.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

PORT_NAMES = ["postgres", "airflow", "mlflow", "mlserver", "mlserver_grpc",
              "mlserver_metrics", "ray_head", "ray_dashboard"]

#: Runs in the runtime environment: Ray's view of the cluster as JSON.
NODES_SCRIPT = """
import json, ray
from airloop.core import settings as config
ray.init(address=config.load().ray_address, log_to_driver=False)
print(json.dumps([{"node_id": n["NodeID"], "alive": n["Alive"],
                   "cpus": n["Resources"].get("CPU", 0)} for n in ray.nodes()]))
ray.shutdown()
"""

#: Runs in the runtime environment: the train step's search on a small synthetic
#: frame, connected by the step's own ray_session (settings.ray_address), then the
#: placement of every trial actor from the GCS actor table (dead actors stay listed;
#: the dashboard's state API is not running: --include-dashboard=false).
TUNE_SCRIPT = """
import copy, json
from datetime import date
from pathlib import Path
import pandas as pd
import ray
from airloop.core import settings as config
from airloop.demo.churn import generate_day
from airloop.core.spec import load_spec, parse_spec
from airloop.runtime.training.search import run_search
from airloop.runtime.training.split import split_frame

settings = config.load()
assert settings.ray_address, "AIRLOOP_RAY_ADDRESS is not set"
raw = load_spec("churn", settings.projects_dir).model_dump(mode="json")
raw["model"].update(num_samples=4, max_iterations=3, grace_period=3, reduction_factor=2,
                    max_concurrent_trials=2, holdout_days=2)
spec = parse_spec(raw, Path("churn.yaml"))
frame = pd.concat([generate_day(spec, d, start=date(2025, 1, 1), rows=120, seed=0)
                   for d in range(5)], ignore_index=True)
frame = frame.sort_values(spec.timestamp, kind="stable", ignore_index=True)
trials = run_search(split_frame(frame, spec), spec, settings, run_id="ray_cluster")
assert not ray.is_initialized()  # the step connected and disconnected by itself

ray.init(address=settings.ray_address, log_to_driver=False)
from ray._private import state
me = ray.get_runtime_context().get_job_id()
actors = [a for a in state.actors().values()
          if a["JobID"] != me and "ImplicitFunc" in a["ActorClassName"]]
print(json.dumps({
    "trials": [{"id": t.trial_id, "status": t.status, "iterations": t.iterations}
               for t in trials],
    "trial_actor_nodes": sorted({a["Address"]["NodeID"] for a in actors}),
    "alive_nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
}))
ray.shutdown()
"""


def platform_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRLOOP_", "AIRFLOW", "MLFLOW_", "RAY_"))}
    env.update({f"AIRLOOP_{n.upper()}_PORT": str(free_port()) for n in PORT_NAMES})
    env["AIRLOOP_HOME"] = str(home)
    env["AIRLOOP_PROJECTS_DIR"] = str(REPO / "include" / "projects")
    return env


def airloop(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The platform commands, as `airloop <args>` runs them (control environment)."""
    return subprocess.run(
        [venv_bin("control", "python"), "-m", "airloop.devstack", *args],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=str(REPO),
    )


def sourced_env(home: Path, base: dict) -> dict[str, str]:
    """``base`` plus the variables of ``run/env.sh``, as an Airflow task gets them."""
    env = dict(base)
    for line in (home / "run" / "env.sh").read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


def runtime(env: dict, script: str, timeout: float = 300) -> dict | list:
    res = subprocess.run([venv_bin("runtime", "python"), "-c", script], env=env,
                         capture_output=True, text=True, timeout=timeout, cwd=str(REPO))
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def state_of(home: Path) -> dict:
    return json.loads((home / "run" / "state.json").read_text())


def group_pss_mb(pgid: int) -> tuple[int, float]:
    """(processes, PSS in MB) of one process group (a Ray node and its children)."""
    count, kb = 0, 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            for line in Path(f"/proc/{entry}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    kb += int(line.split()[1])
                    count += 1
        except (OSError, ValueError, IndexError):
            continue
    return count, round(kb / 1024, 1)


RAY_CMD = re.compile(r"ray::|/ray/|/bin/ray ")


def ray_processes(marker: str, temp_dir: str) -> list[str]:
    """Live Ray processes of this platform: this cluster's temp dir on their command
    line, or this platform's id in their environment (Ray retitles its workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if temp_dir in cmd or (marker.encode() in environ and RAY_CMD.search(cmd)):
            found.append(f"{entry} {cmd[:120]}")
    return found


def wait_for(predicate, timeout: float, what: str, interval: float = 2.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"{what} not reached after {timeout:.0f}s (last: {last})")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    home = tmp_path_factory.mktemp("raycl")
    env = platform_env(home)
    started = time.monotonic()
    up = airloop(env, "up", "--ray-cluster", "--timeout", "480")
    print(f"airloop up --ray-cluster: {time.monotonic() - started:.1f}s\n{up.stdout}")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        # What `up` left, before any test kills or restarts a node (tests run in any order).
        logs = {name: (home / "logs" / f"{name}.log").read_text()
                for name in ("supervisor", "ray-worker")}
        yield {"home": home, "env": env, "up": up, "renv": sourced_env(home, env),
               "state": state_of(home), "logs": logs}
    finally:
        airloop(env, "down")


def test_up_starts_head_then_worker_and_two_nodes_join(cluster):
    home, env, up = cluster["home"], cluster["env"], cluster["up"]
    healthy = dict(re.findall(r"^\s+(ray-head|ray-worker)\s+healthy\s+\((\d+)s\)", up.stdout, re.M))
    assert set(healthy) == {"ray-head", "ray-worker"}, up.stdout
    print(f"time to healthy: ray-head {healthy['ray-head']}s, ray-worker {healthy['ray-worker']}s")
    state = cluster["state"]
    assert state["options"]["ray_cluster"] is True
    for name in ("ray-head", "ray-worker"):
        info = state["components"][name]
        assert info["status"] == "running" and info["restarts"] == 0, (name, info)
    # The worker was started once, after the supervisor saw the head node ALIVE.
    sup_log = cluster["logs"]["supervisor"]
    assert "ray-head healthy: starting ray-worker" in sup_log
    assert "exited" not in sup_log, sup_log
    worker_log = cluster["logs"]["ray-worker"]
    assert worker_log.count("--- airloop: starting ray-worker") == 1
    assert "Ray runtime started" in worker_log

    renv = cluster["renv"]
    assert renv["AIRLOOP_RAY_ADDRESS"] == f"127.0.0.1:{env['AIRLOOP_RAY_HEAD_PORT']}"
    nodes = runtime(renv, NODES_SCRIPT)
    alive = [n for n in nodes if n["alive"]]
    assert len(alive) == 2 and all(n["cpus"] == 1 for n in alive), nodes

    doc = json.loads(airloop(env, "status", "--json").stdout)
    rows = {r["name"]: r for r in doc["components"]}
    assert rows["ray-head"]["health"] == "healthy", rows["ray-head"]
    assert rows["ray-worker"]["health"] == "healthy" and rows["ray-worker"]["detail"] == "2 live nodes"
    for name in ("ray-head", "ray-worker"):
        procs, pss = group_pss_mb(state_of(home)["components"][name]["pid"])
        print(f"{name}: {procs} processes, {pss} MB PSS")


def test_tuning_trials_run_on_both_nodes(cluster):
    out = runtime(cluster["renv"], TUNE_SCRIPT)
    print("tuning:", json.dumps(out))
    assert len(out["trials"]) == 4
    assert all(t["status"] == "completed" and t["iterations"] == 3 for t in out["trials"]), out
    assert len(out["alive_nodes"]) == 2
    # From Ray's actor table: the trial actors ran on both nodes of the cluster.
    assert out["trial_actor_nodes"] == out["alive_nodes"], out


def test_killed_worker_node_comes_back(cluster):
    home, env, renv = cluster["home"], cluster["env"], cluster["renv"]
    start = state_of(home)["components"]
    old_pid = start["ray-worker"]["pid"]
    before = {n["node_id"] for n in runtime(renv, NODES_SCRIPT) if n["alive"]}
    os.killpg(old_pid, signal.SIGKILL)  # `ray start --block` and its raylet, agents, workers

    def restarted():
        info = state_of(home)["components"]["ray-worker"]
        restarted = info["restarts"] == start["ray-worker"]["restarts"] + 1
        return info if restarted and info["pid"] not in (None, old_pid) else None

    info = wait_for(restarted, 90, "ray-worker restart")
    assert info["last_exit"] == -signal.SIGKILL

    def rejoined():
        alive = {n["node_id"] for n in runtime(renv, NODES_SCRIPT) if n["alive"]}
        return alive if len(alive) == 2 and alive - before else None

    alive = wait_for(rejoined, 180, "a new worker node ALIVE next to the head", interval=3)
    assert len(alive & before) == 1  # the head kept its node id
    # The head was not disturbed.
    assert state_of(home)["components"]["ray-head"]["restarts"] == start["ray-head"]["restarts"]

    def worker_healthy():
        doc = json.loads(airloop(env, "status", "--json").stdout)
        row = {r["name"]: r for r in doc["components"]}["ray-worker"]
        return row if row["health"] == "healthy" and row["pid"] == info["pid"] else None

    wait_for(worker_healthy, 60, "ray-worker healthy in `airloop status`")


def test_down_leaves_no_ray_process(cluster):
    env, home = cluster["env"], cluster["home"]
    state = state_of(home)
    marker = f"AIRLOOP_PLATFORM_ID={state['supervisor']['platform_id']}"
    temp_dir = _ray_temp_dir(env)
    assert ray_processes(marker, temp_dir), "no Ray process found before down: the check is blind"
    res = airloop(env, "down")
    assert res.returncode == 0 and "stopped" in res.stdout, res.stdout + res.stderr
    assert ray_processes(marker, temp_dir) == []
    # Back up for the module's other tests, which may run after this one in any order.
    again = airloop(env, "up", "--ray-cluster", "--timeout", "480")
    assert again.returncode == 0, again.stdout + again.stderr


def _ray_temp_dir(env: dict) -> str:
    code = ("from airloop.core import settings as config; from airloop.core.naming import ray_temp_dir;"
            "print(ray_temp_dir(config.load().home))")
    return subprocess.run([venv_bin("control", "python"), "-c", code], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()
