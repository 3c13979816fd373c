"""``airloop up | down | status | logs`` — what the local platform commands do
(their parser is :mod:`airloop.devstack.cli`).

``up`` starts the supervisor (:mod:`airloop.devstack.supervisor`) detached in its own
session and blocks until every component is healthy; ``down`` asks it to stop
everything; ``status`` reads ``run/state.json`` and probes each component; ``logs``
shows ``logs/<component>.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from airloop.core.errors import AirloopError
from airloop.core.settings import NO_TELEMETRY, Settings
from airloop.devstack import auth, health
from airloop.devstack import components as C
from airloop.devstack.state import pid_alive, read_state, supervisor_pid
from airloop.devstack.supervisor import (
    _group_alive,
    _signal_group,
    ensure_databases,
    log_path,
    options_path,
    platform_processes,
)


# -- status ------------------------------------------------------------------
def _components_of(state: dict, settings: Settings) -> list[C.Component]:
    opts = state.get("options", {})
    return C.plan(settings, opts.get("database_url"), bool(opts.get("ray_cluster")))


def collect_status(settings: Settings) -> dict:
    """Probe every component recorded in the state file; returns the ``--json`` document."""
    state = read_state(settings)
    comps = _components_of(state, settings) if state else []
    recorded = state.get("components", {})
    cache: dict = {}
    rows = []
    for comp in comps:
        info = recorded.get(comp.name, {})
        alive = pid_alive(info.get("pid"))
        ok, detail = health.check(comp, cache) if alive else (False, info.get("status", "not started"))
        rows.append({
            "name": comp.name, "url": comp.url, "pid": info.get("pid") if alive else None,
            "health": "healthy" if ok else ("unhealthy" if alive else "down"), "detail": detail,
            "restarts": info.get("restarts", 0), "last_exit": info.get("last_exit"),
            "status": info.get("status"), "log": str(log_path(settings, comp.name)),
        })
    sup = state.get("supervisor", {})
    doc = {
        "home": str(settings.home),
        "supervisor": {"pid": supervisor_pid(settings), "phase": sup.get("phase"),
                       "log": str(log_path(settings, "supervisor"))},
        "migrate": state.get("migrate", {}),
        "components": rows,
        "healthy": bool(rows) and all(r["health"] == "healthy" for r in rows),
        "env_file": str(settings.run_dir / "env.sh"),
        "memory": platform_memory(settings),
    }
    if auth.passwords_file(settings).exists():
        user, password = auth.admin_credentials(settings)
        doc["airflow"] = {"url": f"http://{settings.host}:{settings.ports['airflow']}",
                          "user": user, "password": password,
                          "passwords_file": str(auth.passwords_file(settings))}
    return doc


def platform_memory(settings: Settings) -> dict:
    """Memory of every live platform process: ``{"processes", "pss_mb", "rss_mb"}``
    (PSS counts shared pages once, so it is the honest sum)."""
    state = read_state(settings)
    pids = platform_processes(state.get("supervisor", {}).get("platform_id"),
                              set(state.get("sessions", [])))
    if supervisor_pid(settings):
        pids.append(supervisor_pid(settings))
    pss = rss = count = 0
    for pid in set(pids):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                values = {ln.split()[0]: int(ln.split()[1]) for ln in fh if ln.split()[0] in ("Rss:", "Pss:")}
        except (OSError, ValueError, IndexError):
            continue
        count += 1
        pss += values.get("Pss:", 0)
        rss += values.get("Rss:", 0)
    return {"processes": count, "pss_mb": round(pss / 1024), "rss_mb": round(rss / 1024)}


def format_status(doc: dict) -> str:
    header = ("COMPONENT", "URL", "PID", "HEALTH", "RESTARTS")
    rows = [header] + [
        (r["name"], r["url"], str(r["pid"] or "-"),
         r["health"] if r["health"] == "healthy" else f"{r['health']} ({r['detail']})",
         str(r["restarts"]))
        for r in doc["components"]
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    if "airflow" in doc:
        a = doc["airflow"]
        lines += ["", f"Airflow UI: {a['url']}  user: {a['user']}  password: {a['password']}"
                      f"  (from {a['passwords_file']})"]
    lines.append(f"Environment: source {doc['env_file']}")
    mem = doc.get("memory") or {}
    if mem.get("processes"):
        lines.append(f"Memory: {mem['pss_mb']} MB PSS ({mem['rss_mb']} MB RSS) in {mem['processes']} processes")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print the status table (or JSON); exit 1 when any component is not healthy."""
    doc = collect_status(settings)
    if args.json:
        print(json.dumps(doc, indent=2))
    elif not doc["components"]:
        print(f"the platform is not running (AIRLOOP_HOME={settings.home}); start it with `airloop up`")
    else:
        print(format_status(doc))
    return 0 if doc["healthy"] else 1


# -- up ----------------------------------------------------------------------
def _spawn_supervisor(settings: Settings, options: dict) -> int:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    options_path(settings).write_text(json.dumps(options))
    control_python = Path(C.venv_tool(settings, "control", "python"))
    python = str(control_python) if control_python.exists() else sys.executable
    with open(log_path(settings, "supervisor"), "ab") as log:
        proc = subprocess.Popen(
            [python, "-m", "airloop.devstack.supervisor"],
            env={**os.environ, **NO_TELEMETRY}, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, cwd=str(settings.home),
        )
    return proc.pid


def _failure(settings: Settings, doc: dict, state: dict) -> str | None:
    if not supervisor_pid(settings):
        phase = state.get("supervisor", {}).get("phase", "")
        return f"the supervisor exited ({phase or 'no state'}); see {log_path(settings, 'supervisor')}"
    if state.get("supervisor", {}).get("phase", "").startswith("error"):
        return f"supervisor {state['supervisor']['phase']}; see {log_path(settings, 'supervisor')}"
    if state.get("migrate", {}).get("status") == "failed":
        return f"`airflow db migrate` failed; see {log_path(settings, 'airflow-migrate')}"
    for row in doc["components"]:
        if row["status"] == "crashloop" and row["health"] != "healthy":
            return (f"{row['name']} won't start (exit {row['last_exit']}, "
                    f"{row['restarts']} restarts); see {row['log']}")
    return None


def wait_healthy(settings: Settings, timeout: float) -> dict:
    """Block until every component is healthy, printing a line per component that
    becomes healthy; raise AirloopError on a crash loop, a dead supervisor or timeout."""
    started = time.monotonic()
    seen: set[str] = set()
    last_progress = started
    while True:
        state = read_state(settings)
        doc = collect_status(settings) if state.get("components") else {"components": [], "healthy": False}
        for row in doc["components"]:
            if row["health"] == "healthy" and row["name"] not in seen:
                seen.add(row["name"])
                print(f"  {row['name']:<22} healthy  ({time.monotonic() - started:.0f}s)", flush=True)
        if doc["healthy"]:
            return doc
        problem = _failure(settings, doc, state)
        elapsed = time.monotonic() - started
        if problem is None and elapsed > timeout:
            waiting = [f"{r['name']} ({r['log']})" for r in doc["components"] if r["health"] != "healthy"]
            problem = f"not healthy after {timeout:.0f}s: {', '.join(waiting)}"
        if problem:
            raise AirloopError(problem)
        if time.monotonic() - last_progress >= 15:
            last_progress = time.monotonic()
            waiting = [r["name"] for r in doc["components"] if r["health"] != "healthy"]
            print(f"  waiting for: {', '.join(waiting) or 'supervisor'} ({elapsed:.0f}s)", flush=True)
        time.sleep(1.0)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Start the platform (or report it when already running) and wait until healthy."""
    database_url = args.database_url or settings.database_url
    running = supervisor_pid(settings)
    if running:
        opts = read_state(settings).get("options", {})
        print(f"airloop platform already running (supervisor pid {running}, home {settings.home})")
        if args.ray_cluster and not opts.get("ray_cluster"):
            print("note: running without --ray-cluster; `airloop down` then `airloop up --ray-cluster`")
    else:
        comps = C.plan(settings, database_url, args.ray_cluster)
        C.check_ports(settings, comps)
        if database_url:  # fail fast with one line if the server is unreachable
            try:
                ensure_databases(C.database(settings, database_url))
            except Exception as exc:
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise AirloopError(f"database {database_url}: {msg}") from exc
        settings.home.mkdir(parents=True, exist_ok=True)
        auth.ensure_admin_password(settings)
        auth.ensure_secrets(settings)
        C.write_mlserver_settings(settings)
        pid = _spawn_supervisor(settings, {"database_url": database_url,
                                           "ray_cluster": bool(args.ray_cluster)})
        print(f"airloop: starting the platform (supervisor pid {pid}, home {settings.home})", flush=True)
        deadline = time.monotonic() + 15
        while not read_state(settings).get("supervisor", {}).get("pid") == pid:
            if not pid_alive(pid) or time.monotonic() > deadline:
                raise AirloopError(f"the supervisor did not start; see {log_path(settings, 'supervisor')}")
            time.sleep(0.2)
    try:
        doc = wait_healthy(settings, args.timeout)
    except AirloopError:
        if not running:
            stop_platform(settings, 90.0)
        raise
    print(format_status(doc))
    return 0


# -- down --------------------------------------------------------------------
def stop_platform(settings: Settings, timeout: float) -> bool:
    """Stop the supervisor (which stops the components) and sweep leftovers.
    Returns False when nothing was running."""
    state = read_state(settings)
    pid = supervisor_pid(settings)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.25)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    # A supervisor that crashed or was killed leaves its components: stop them here.
    leftovers = [i["pid"] for i in state.get("components", {}).values() if pid_alive(i.get("pid"))]
    platform_id = state.get("supervisor", {}).get("platform_id")
    if platform_id:
        leftovers += platform_processes(
            platform_id, set(state.get("sessions", [])), exclude={os.getpid()}
        )
    for p in leftovers:
        _signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(pid_alive(p) or _group_alive(p) for p in leftovers):
        time.sleep(0.25)
    for p in leftovers:
        _signal_group(p, signal.SIGKILL)
    return bool(pid or leftovers)


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    """Stop everything; idempotent."""
    if stop_platform(settings, args.timeout):
        print(f"airloop: platform stopped (home {settings.home})")
    else:
        print(f"airloop: platform was not running (home {settings.home})")
    return 0


# -- logs --------------------------------------------------------------------
def _resolve_logs(settings: Settings, name: str | None) -> list[Path]:
    available = sorted(settings.logs_dir.glob("*.log"))
    if not name:
        if not available:
            raise AirloopError(f"no logs under {settings.logs_dir}; run `airloop up` first")
        return available
    names = {p.stem: p for p in available}
    if name in names:
        return [names[name]]
    matches = [p for stem, p in names.items() if name in stem]
    if len(matches) == 1:
        return matches
    choices = ", ".join(sorted(names)) or "none yet"
    what = "is ambiguous" if matches else "has no log"
    raise AirloopError(f"component {name!r} {what}; logs: {choices}")


def _tail(path: Path, n: int) -> list[str]:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - max(n, 1) * 400))
        return fh.read().decode(errors="replace").splitlines()[-n:] if n > 0 else []


def cmd_logs(args: argparse.Namespace, settings: Settings) -> int:
    """Print the last ``-n`` lines of one or every component log; ``-f`` follows."""
    paths = _resolve_logs(settings, args.component)
    many = len(paths) > 1
    for path in paths:
        if many:
            print(f"==> {path} <==")
        for line in _tail(path, args.n):
            print(f"{path.stem}: {line}" if many else line)
    if not args.follow:
        return 0
    handles = {}
    for path in paths:
        fh = open(path, "rb")
        fh.seek(0, os.SEEK_END)
        handles[path] = fh
    try:
        while True:
            for path, fh in handles.items():
                for raw in fh.readlines():
                    line = raw.decode(errors="replace").rstrip("\n")
                    print(f"{path.stem}: {line}" if many else line, flush=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
