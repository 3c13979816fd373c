"""The supervisor: a detached process (``python -m airloop.devstack.supervisor``) that
starts the components of :func:`airloop.devstack.components.plan` in order, restarts
one that dies (exponential backoff, counted in ``restarts``), and on SIGTERM stops
them in reverse order (SIGTERM, then SIGKILL after a timeout; PostgreSQL last, with a
fast shutdown). Its only output is ``run/state.json`` and ``logs/*.log``.

Start order: PostgreSQL (initdb once) -> databases ``airflow``/``mlflow`` created if
missing (phase ``db``) -> MLflow, MLServer and ``airflow db migrate`` -> the four
Airflow processes (phase ``migrated``) -> with ``--ray-cluster``, once all of them are
healthy (phase ``services``), the Ray head -> the Ray worker once the head node is
registered in the GCS (phase ``ray-head``, dropped while the head is down).
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import time
import uuid
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import psycopg2
from psycopg2 import sql

from airloop.core.settings import Settings, load
from airloop.devstack import components as C
from airloop.devstack import health
from airloop.devstack.state import write_state

STOP_TIMEOUT = 20.0
MAX_BACKOFF = 30.0
MIGRATE_ATTEMPTS = 3
#: Phases of the Ray nodes: ``services`` (every other component healthy; the head's
#: ``ray start`` gives its raylet a fixed 30 s to register, which the Airflow start-up
#: burst on a small machine exceeds) and ``ray-head`` (the worker's start condition).
RAY_PHASES = ("services", "ray-head")
SERVICES_CHECK_INTERVAL = 2.0


def options_path(settings: Settings) -> Path:
    return settings.run_dir / "options.json"


def log_path(settings: Settings, name: str) -> Path:
    return settings.logs_dir / f"{name}.log"


def platform_processes(platform_id: str | None, sessions: set[int] = frozenset(),
                       exclude: set[int] = frozenset()) -> list[int]:
    """Pids of live processes of one platform: those in a session the supervisor
    created (``sessions``: the pids it started, each a session leader) or whose
    environment carries ``AIRLOOP_PLATFORM_ID=<id>`` (a grandchild that called setsid;
    processes that rewrite their title lose that marker, hence both)."""
    marker = f"AIRLOOP_PLATFORM_ID={platform_id}".encode() if platform_id else None
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            if int(fields[3]) in sessions:
                found.append(int(entry))
                continue
            if marker:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if marker in fh.read().split(b"\0"):
                        found.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def init_pgdata(settings: Settings, run_as: str | None) -> None:
    """initdb ``$AIRLOOP_HOME/pgdata`` once (trust auth, user postgres); idempotent."""
    pgdata = settings.home / "pgdata"
    if (pgdata / "PG_VERSION").exists():
        return
    pgdata.mkdir(parents=True, exist_ok=True)
    if run_as:
        # The pgserver wheel is in the control environment only (where the supervisor runs).
        from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions

        ensure_prefix_permissions(pgdata)
        bindir = C.pg_bin(settings, "postgres").parent
        ensure_folder_permissions(bindir, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(bindir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        pw = pwd.getpwnam(run_as)
        os.chown(pgdata, pw.pw_uid, pw.pw_gid)
    pgdata.chmod(0o700)
    with open(log_path(settings, "postgres-initdb"), "w") as log:
        subprocess.run(
            [str(C.pg_bin(settings, "initdb")), "-D", str(pgdata), "--auth=trust", "--auth-local=trust",
             "--encoding=utf8", "-U", "postgres"],
            check=True, stdout=log, stderr=subprocess.STDOUT, user=run_as, cwd="/",
        )


def ensure_databases(db: C.Database) -> None:
    """Create the Airflow and MLflow databases if missing (raises while PG is down)."""
    conn = psycopg2.connect(connect_timeout=3, **db.admin_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in (db.airflow_db, db.mlflow_db):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()


def _airflow_revision(db: C.Database) -> str | None:
    try:
        conn = psycopg2.connect(connect_timeout=3, **{**db.admin_dsn, "dbname": db.airflow_db})
    except Exception:
        return None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version_num FROM alembic_version")
            row = cur.fetchone()
            return row[0] if row else None
    except Exception:
        return None
    finally:
        conn.close()


def _airflow_version() -> str:
    try:
        return version("apache-airflow")
    except PackageNotFoundError:
        return "unknown"


class Supervisor:
    """Runs until SIGTERM/SIGINT; see the module docstring."""

    def __init__(self, settings: Settings, options: dict):
        self.settings = settings
        self.options = options
        self.platform_id = uuid.uuid4().hex
        self.db = C.database(settings, options.get("database_url"))
        self.comps = C.plan(settings, options.get("database_url"), bool(options.get("ray_cluster")))
        public_env = C.platform_env(settings, options.get("database_url"), bool(options.get("ray_cluster")))
        C.write_env_file(settings, public_env)
        self.env = {**os.environ, **public_env, "AIRLOOP_PLATFORM_ID": self.platform_id}
        self.procs: dict[str, subprocess.Popen] = {}
        self.sessions: set[int] = set()  # every session leader started (for the sweep)
        self.info = {
            c.name: {"pid": None, "url": c.url, "restarts": 0, "last_exit": None,
                     "status": "waiting", "log": str(log_path(settings, c.name)),
                     "started_at": None, "failures": 0, "next_start": 0.0}
            for c in self.comps
        }
        self.phases: set[str] = set()
        self.services_next_check = 0.0
        self.migrate: subprocess.Popen | None = None
        self.migrate_attempts = 0
        self.migrate_status = "waiting"
        self.stopping = False
        self.phase = "starting"

    # -- state ------------------------------------------------------------
    def save(self) -> None:
        comps = {n: {k: v for k, v in i.items() if k not in ("failures", "next_start")}
                 for n, i in self.info.items()}
        write_state(self.settings, {
            "supervisor": {"pid": os.getpid(), "platform_id": self.platform_id,
                           "started_at": self.started_at, "phase": self.phase,
                           "log": str(log_path(self.settings, "supervisor"))},
            "options": self.options,
            "order": [c.name for c in self.comps],
            "sessions": sorted(self.sessions),
            "migrate": {"status": self.migrate_status, "attempts": self.migrate_attempts,
                        "log": str(log_path(self.settings, "airflow-migrate"))},
            "components": comps,
        })

    # -- processes --------------------------------------------------------
    def start(self, comp: C.Component) -> None:
        info = self.info[comp.name]
        if info["pid"]:  # clear stragglers of a previous incarnation
            _signal_group(info["pid"], signal.SIGKILL)
        log = open(log_path(self.settings, comp.name), "ab")
        log.write(f"\n--- airloop: starting {comp.name} at {time.ctime()}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            comp.argv, env={**self.env, **comp.env}, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, user=comp.run_as,
            cwd=str(self.settings.home),
        )
        log.close()
        self.procs[comp.name] = proc
        self.sessions.add(proc.pid)
        info.update(pid=proc.pid, status="running", started_at=time.time())

    def reap(self) -> None:
        now = time.time()
        for comp in self.comps:
            proc = self.procs.get(comp.name)
            if proc is None or proc.poll() is None:
                continue
            info = self.info[comp.name]
            del self.procs[comp.name]
            _signal_group(proc.pid, signal.SIGKILL)
            ran = now - (info["started_at"] or now)
            info["failures"] = 1 if ran > 60 else info["failures"] + 1
            delay = min(MAX_BACKOFF, 2.0 ** (info["failures"] - 1))
            info.update(last_exit=proc.returncode, next_start=now + delay,
                        status="crashloop" if info["failures"] >= 3 else "backoff")
            if comp.name == "ray-head":
                # A new head is a new cluster: a worker (re)start waits until it is healthy.
                self.phases.discard("ray-head")
            print(f"{time.ctime()} {comp.name} exited with {proc.returncode} after {ran:.0f}s;"
                  f" restarting in {delay:.0f}s", flush=True)

    def ready(self, comp: C.Component) -> bool:
        return comp.after is None or comp.after in self.phases

    def advance(self) -> None:
        if "db" not in self.phases:
            try:
                ensure_databases(self.db)
                self.phases.add("db")
            except Exception:  # not accepting connections yet
                pass
        if "db" in self.phases and "migrated" not in self.phases:
            stamp_path = self.settings.run_dir / "airflow-migrated.json"
            stamp = {"db": self.db.url(self.db.airflow_db), "airflow": _airflow_version()}
            if self.migrate_attempts == 0 and stamp_path.exists():
                # Warm start: skip `airflow db migrate` (~15 s of imports) when this
                # Airflow version already migrated this database to its current head.
                old = json.loads(stamp_path.read_text())
                if {k: old.get(k) for k in stamp} == stamp and old.get("revision") and (
                    old.get("revision") == _airflow_revision(self.db)
                ):
                    self.migrate_status = "up to date"
                    self.phases.add("migrated")
                    return
            if self.migrate is None and self.migrate_status != "failed":
                self.migrate_attempts += 1
                log = open(log_path(self.settings, "airflow-migrate"), "ab")
                self.migrate = proc = subprocess.Popen(
                    [C.venv_tool(self.settings, "control", "airflow"), "db", "migrate"],
                    env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, cwd=str(self.settings.home),
                )
                log.close()
                self.sessions.add(proc.pid)
                self.migrate_status = "running"
            elif self.migrate is not None and self.migrate.poll() is not None:
                code, self.migrate = self.migrate.returncode, None
                if code == 0:
                    self.migrate_status = "done"
                    stamp_path.write_text(json.dumps({**stamp, "revision": _airflow_revision(self.db)}))
                    self.phases.add("migrated")
                elif self.migrate_attempts >= MIGRATE_ATTEMPTS:
                    self.migrate_status = "failed"
                else:
                    self.migrate_status = f"retrying (exit {code})"
        if ("services" not in self.phases and time.monotonic() >= self.services_next_check
                and any(c.after == "services" for c in self.comps)):
            self.services_next_check = time.monotonic() + SERVICES_CHECK_INTERVAL
            cache: dict = {}
            if all(c.name in self.procs and health.check(c, cache)[0]
                   for c in self.comps if c.after not in RAY_PHASES):
                self.phases.add("services")
                print(f"{time.ctime()} services healthy", flush=True)
        if "ray-head" not in self.phases and "ray-head" in self.procs:
            # Not just the GCS port: `ray start --address` exits when the head node is
            # not registered yet, so wait until the head's `ray start` confirmed it.
            comp = next(c for c in self.comps if c.name == "ray-head")
            if health.check(comp, {})[0]:
                self.phases.add("ray-head")
                print(f"{time.ctime()} ray-head healthy: starting ray-worker", flush=True)

    def step(self) -> None:
        self.reap()
        self.advance()
        now = time.time()
        for comp in self.comps:
            info = self.info[comp.name]
            if comp.name not in self.procs and self.ready(comp) and now >= info["next_start"]:
                if info["status"] in ("backoff", "crashloop"):
                    info["restarts"] += 1
                self.start(comp)

    def stop_all(self) -> None:
        if not self.phase.startswith("error"):
            self.phase = "stopping"
        self.save()
        if self.migrate is not None:
            _signal_group(self.migrate.pid, signal.SIGKILL)
        tiers = [[c for c in reversed(self.comps) if c.name != "postgres"],
                 [c for c in self.comps if c.name == "postgres"]]
        for tier in tiers:
            pids = {}
            for comp in tier:
                proc = self.procs.get(comp.name)
                if proc is not None:
                    _signal_group(proc.pid, getattr(signal, comp.stop_signal))
                    pids[comp.name] = proc
            deadline = time.monotonic() + STOP_TIMEOUT
            while time.monotonic() < deadline and any(_group_alive(p.pid) for p in pids.values()):
                for p in pids.values():
                    p.poll()
                time.sleep(0.2)
            for name, proc in pids.items():
                if _group_alive(proc.pid):
                    print(f"{time.ctime()} {name} did not stop in {STOP_TIMEOUT:.0f}s: SIGKILL", flush=True)
                    _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
                self.info[name].update(status="stopped", last_exit=proc.returncode, pid=None)
                self.procs.pop(name, None)
            self.save()
        # Anything that escaped its process group (re-parented grandchildren).
        for pid in platform_processes(self.platform_id, self.sessions, exclude={os.getpid()}):
            _signal_group(pid, signal.SIGKILL)
        self.phase = "stopped" if not self.phase.startswith("error") else self.phase
        self.save()

    def run(self) -> int:
        self.started_at = time.time()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.save()
        try:
            if self.db.embedded:
                init_pgdata(self.settings, self.comps[0].run_as)
            self.phase = "running"
            while not self.stopping:
                self.step()
                self.save()
                time.sleep(0.5)
        except Exception as exc:
            self.phase = f"error: {exc}"
            print(f"{time.ctime()} supervisor error: {exc!r}", flush=True)
        finally:
            self.stop_all()
        return 0

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True


def main() -> int:
    settings = load()
    options = json.loads(options_path(settings).read_text())
    return Supervisor(settings, options).run()


if __name__ == "__main__":
    sys.exit(main())
