"""What the local platform runs: one :class:`Component` per supervised process.

:func:`plan` turns settings and ``up`` options into the ordered component list (start
order; stop order is the reverse, PostgreSQL last); :func:`platform_env` is the
environment every component (and every Airflow task) inherits, also written to
``$AIRLOOP_HOME/run/env.sh``. Pure functions: nothing here starts or writes anything
except :func:`write_env_file` and :func:`write_mlserver_settings`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shlex
import socket
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from airloop.core.errors import AirloopError
from airloop.core.io import atomic_write, write_json
from airloop.core.naming import ray_temp_dir
from airloop.core.settings import NO_TELEMETRY, REPO_ROOT, Settings
from airloop.devstack import auth


@dataclass(frozen=True)
class Component:
    """One supervised long-running process."""

    name: str
    argv: list[str]
    url: str
    health: str  # postgres | airflow-api | airflow-job:<key> | http:<path> | tcp | ray-head | ray-nodes
    ports: dict[str, int] = field(default_factory=dict)  # settings port name -> port
    env: dict[str, str] = field(default_factory=dict)
    after: str | None = None  # start at this phase: "db", "migrated", "services", "ray-head"
    stop_signal: str = "SIGTERM"
    run_as: str | None = None  # system user (PostgreSQL refuses to run as root)
    log: str | None = None  # the supervisor's log of this component, when health reads it


@dataclass(frozen=True)
class Database:
    """Where Airflow and MLflow keep their metadata."""

    embedded: bool
    admin_dsn: dict  # psycopg2.connect kwargs for the maintenance database
    airflow_db: str
    mlflow_db: str
    sqlalchemy_base: str  # postgresql+psycopg2://user[:pw]@host:port

    def url(self, db: str) -> str:
        return f"{self.sqlalchemy_base}/{db}"


def venv_tool(settings: Settings, env: str, tool: str) -> str:
    return str(settings.venv_tool(env, tool))


def pg_bin(settings: Settings, tool: str) -> Path:
    """A binary shipped in the ``pgserver`` wheel (control environment)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin:
        return Path(spec.origin).parent / "pginstall" / "bin" / tool
    # Called from another environment: use the control environment's wheel.
    found = sorted((settings.venvs / "control" / "lib").glob(
        f"python3*/site-packages/pgserver/pginstall/bin/{tool}"))
    if not found:
        raise AirloopError("the pgserver package is missing from .venvs/control (run scripts/bootstrap.sh)")
    return found[-1]


def database(settings: Settings, database_url: str | None) -> Database:
    """Resolve the metadata database: embedded (``$AIRLOOP_HOME/pgdata``) or an
    existing server given by URL. A database name in the URL is a prefix:
    ``postgresql://u@h:5432/team`` -> databases ``team_airflow`` and ``team_mlflow``."""
    if not database_url:
        port = settings.ports["postgres"]
        return Database(
            embedded=True,
            admin_dsn={"host": settings.host, "port": port, "user": "postgres", "dbname": "postgres"},
            airflow_db="airflow",
            mlflow_db="mlflow",
            sqlalchemy_base=f"postgresql+psycopg2://postgres@{settings.host}:{port}",
        )
    parts = urllib.parse.urlsplit(database_url)
    if parts.scheme.split("+")[0] not in {"postgresql", "postgres"} or not parts.hostname:
        raise AirloopError(f"--database-url must be postgresql://user@host:port[/prefix], got {database_url!r}")
    prefix = parts.path.strip("/")
    prefix = f"{prefix}_" if prefix else ""
    user = urllib.parse.unquote(parts.username or "postgres")
    password = urllib.parse.unquote(parts.password) if parts.password else None
    port = parts.port or 5432
    cred = urllib.parse.quote(user) + (f":{urllib.parse.quote(password)}" if password else "")
    dsn = {"host": parts.hostname, "port": port, "user": user, "dbname": "postgres"}
    if password:
        dsn["password"] = password
    return Database(
        embedded=False,
        admin_dsn=dsn,
        airflow_db=f"{prefix}airflow",
        mlflow_db=f"{prefix}mlflow",
        sqlalchemy_base=f"postgresql+psycopg2://{cred}@{parts.hostname}:{port}",
    )


def airflow_env(settings: Settings, db: Database) -> dict[str, str]:
    """Airflow configuration, entirely by environment (``AIRFLOW_HOME`` under the home)."""
    sec = auth.ensure_secrets(settings)
    port = settings.ports["airflow"]
    repo = REPO_ROOT or settings.home
    extra = {}
    if importlib.util.find_spec("asyncpg") is None:
        # The control lock has no async PostgreSQL driver; an empty async URL is
        # Airflow's supported "no async engine" path (only the dag-run `wait` endpoint
        # and async task-state reads need it).
        extra["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = ""
    return {
        **extra,
        "AIRFLOW_HOME": str(auth.airflow_home(settings)),
        "AIRFLOW__CORE__DAGS_FOLDER": str(repo / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(repo / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # LocalExecutor forks `parallelism` workers up front: keep it small.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{settings.host}:{port}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{auth.ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(auth.passwords_file(settings)),
        "AIRFLOW__CORE__FERNET_KEY": sec["fernet_key"],
        "AIRFLOW__API__HOST": settings.host,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": sec["secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": sec["jwt_secret"],
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db.url(db.airflow_db),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "2",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "8",
        # An idle scheduler loop sleeps this long before it looks for finished tasks
        # again (default 1 s, i.e. up to 1 s between a task's end and the next task's
        # start). 0.2 s: task-to-task gap 0.24 s median (benchmarks), for one idle
        # loop of DB queries (~5 ms) five times a second.
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(settings.logs_dir / "airflow"),
    }


def platform_env(settings: Settings, database_url: str | None, ray_cluster: bool) -> dict[str, str]:
    """Variables every component and every Airflow task process gets (not ``os.environ``)."""
    db = database(settings, database_url)
    env = {
        **NO_TELEMETRY,
        "AIRLOOP_HOME": str(settings.home),
        "AIRLOOP_MODE": "local",
        "AIRLOOP_PROJECTS_DIR": str(settings.projects_dir),
        "AIRLOOP_DATA_DIR": str(settings.data_dir),
        "AIRLOOP_VENVS": str(settings.venvs),
        "AIRLOOP_HOST": settings.host,
        "MLFLOW_TRACKING_URI": f"http://{settings.host}:{settings.ports['mlflow']}",
        "AIRLOOP_MODEL_SERVER_URL": f"http://{settings.host}:{settings.ports['mlserver']}",
        **{f"AIRLOOP_{name.upper()}_PORT": str(port) for name, port in settings.ports.items()},
        **airflow_env(settings, db),
    }
    if database_url:
        env["AIRLOOP_DATABASE_URL"] = database_url
    if ray_cluster:
        env["AIRLOOP_RAY_ADDRESS"] = f"{settings.host}:{settings.ports['ray_head']}"
    return env


def write_env_file(settings: Settings, env: dict[str, str]) -> Path:
    """Write ``run/env.sh`` (``export K=V`` lines, mode 0600: it holds the Airflow secrets)."""
    path = settings.run_dir / "env.sh"
    lines = ["# airloop local platform environment: source this file", *(
        f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())
    )]
    return atomic_write(path, "\n".join(lines) + "\n", mode=0o600)


def write_mlserver_settings(settings: Settings) -> Path:
    """Write the model repository's ``settings.json`` (ports, load at startup), keeping
    keys others added. The repository itself may be empty."""
    repo = settings.model_repository
    repo.mkdir(parents=True, exist_ok=True)
    path = repo / "settings.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(
        {
            "host": settings.host,
            "http_port": settings.ports["mlserver"],
            "grpc_port": settings.ports["mlserver_grpc"],
            "metrics_port": settings.ports["mlserver_metrics"],
            "load_models_at_startup": True,
            "metrics_dir": str(settings.home / "serving" / "metrics"),
            "environments_dir": str(settings.home / "serving" / "envs"),
            # Inference in the server process: one interpreter less per model server.
            "parallel_workers": 0,
        }
    )
    write_json(path, data)
    return path


def mlflow_metrics_dir(settings: Settings) -> Path:
    """prometheus_client's multiprocess files of the local MLflow server
    (``--expose-prometheus``; MLflow creates the directory)."""
    return settings.home / "mlflow" / "prometheus"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plan(settings: Settings, database_url: str | None, ray_cluster: bool) -> list[Component]:
    """The components in start order."""
    host, ports = settings.host, settings.ports
    db = database(settings, database_url)
    comps: list[Component] = []
    if db.embedded:
        comps.append(
            Component(
                name="postgres",
                argv=[
                    str(pg_bin(settings, "postgres")), "-D", str(settings.home / "pgdata"),
                    "-p", str(ports["postgres"]), "-c", f"listen_addresses={host}",
                    # TCP only: no socket file in a system directory.
                    "-c", "unix_socket_directories=",
                    "-c", "shared_buffers=32MB", "-c", "max_connections=150",
                    "-c", "fsync=off", "-c", "synchronous_commit=off",
                ],
                url=f"postgresql://postgres@{host}:{ports['postgres']}",
                health="postgres",
                ports={"postgres": ports["postgres"]},
                stop_signal="SIGINT",  # PostgreSQL "fast" shutdown
                run_as=postgres_system_user(settings),
            )
        )
    airflow = venv_tool(settings, "control", "airflow")
    # --skip-serve-logs: every process shares one log folder, so the api-server reads
    # task logs from disk; the log servers would only cost memory and fixed ports
    # (8793/8794) that collide between parallel platforms.
    api_url = f"http://{host}:{ports['airflow']}"
    comps += [
        Component(
            name="mlflow",
            argv=[
                venv_tool(settings, "runtime", "mlflow"), "server",
                "--backend-store-uri", db.url(db.mlflow_db),
                "--artifacts-destination", str(settings.home / "mlartifacts"),
                "--host", host, "--port", str(ports["mlflow"]), "--workers", "1",
                "--allowed-hosts", ",".join(
                    [f"localhost:{ports['mlflow']}", f"127.0.0.1:{ports['mlflow']}",
                     "localhost", "127.0.0.1"]
                    + ([f"{host}:{ports['mlflow']}", host] if host not in ("127.0.0.1", "localhost") else [])
                ),
                # Prometheus text at <url>/metrics (request counts and latencies).
                "--expose-prometheus", str(mlflow_metrics_dir(settings)),
            ],
            url=f"http://{host}:{ports['mlflow']}",
            health="http:/health",
            ports={"mlflow": ports["mlflow"]},
            env={
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                # prometheus_client prefers this over the variable --expose-prometheus
                # sets; a parent that imported feast (it sets its own) must not win.
                "PROMETHEUS_MULTIPROC_DIR": str(mlflow_metrics_dir(settings)),
            },
            after="db",
        ),
        Component(
            name="mlserver",
            argv=[venv_tool(settings, "serving", "mlserver"), "start", str(settings.model_repository)],
            url=f"http://{host}:{ports['mlserver']}",
            health="http:/v2/health/ready",
            ports={k: ports[k] for k in ("mlserver", "mlserver_grpc", "mlserver_metrics")},
        ),
        Component(
            name="airflow-api-server",
            argv=[airflow, "api-server"],
            url=api_url,
            health="airflow-api",
            ports={"airflow": ports["airflow"]},
            after="migrated",
        ),
        Component(
            name="airflow-scheduler", argv=[airflow, "scheduler", "--skip-serve-logs"], url=api_url,
            health="airflow-job:scheduler", after="migrated",
        ),
        Component(
            name="airflow-dag-processor", argv=[airflow, "dag-processor"], url=api_url,
            health="airflow-job:dag_processor", after="migrated",
        ),
        Component(
            name="airflow-triggerer", argv=[airflow, "triggerer", "--skip-serve-logs"], url=api_url,
            health="airflow-job:triggerer", after="migrated",
        ),
    ]
    if ray_cluster:
        comps += ray_components(settings)
    return comps


#: Per-node limits of the loopback Ray cluster: one CPU each (two nodes on a shared
#: 2-core machine) and a small object store (Ray's default is 30 % of RAM per node).
RAY_NODE_CPUS = 1
RAY_OBJECT_STORE_BYTES = 200 * 1024 * 1024


def ray_components(settings: Settings) -> list[Component]:
    """A Ray head and one worker node on ``settings.host`` (``up --ray-cluster``).

    The head starts once every other component is healthy (phase ``services``):
    ``ray start`` gives a node's raylet a fixed 30 s to register with the GCS and
    exits after that, which the Airflow start-up burst on a 2-core machine exceeded.
    The worker starts only after the head is healthy (phase ``ray-head``: the GCS
    answers and the head's ``ray start`` confirmed its node registered);
    ``ray start --address`` against a GCS whose head node is not registered yet exits. Both nodes share the head's
    ``--temp-dir`` (short: Ray's unix socket paths must stay under 108 bytes).
    """
    host, ports = settings.host, settings.ports
    ray = venv_tool(settings, "runtime", "ray")
    address = f"{host}:{ports['ray_head']}"
    common = [
        "--block", "--num-cpus", str(RAY_NODE_CPUS), "--num-gpus", "0",
        "--node-ip-address", host, "--object-store-memory", str(RAY_OBJECT_STORE_BYTES),
        "--disable-usage-stats",
        # Worker output stays in the session's log files; no log-streaming process.
        "--include-log-monitor=false",
    ]
    return [
        Component(
            name="ray-head",
            argv=[
                ray, "start", "--head", "--port", str(ports["ray_head"]), *common,
                "--include-dashboard=false", "--temp-dir", str(ray_temp_dir(settings.home)),
                # Ray's fixed default agent port (52365) would collide between the two
                # nodes and between parallel platforms: take free ports instead.
                "--dashboard-agent-listen-port", str(_free_port()),
            ],
            url=f"ray://{address}",
            health="ray-head",
            ports={"ray_head": ports["ray_head"]},
            after="services",
            log=str(settings.logs_dir / "ray-head.log"),
        ),
        Component(
            name="ray-worker",
            argv=[
                ray, "start", "--address", address, *common,
                "--dashboard-agent-listen-port", str(_free_port()),
            ],
            url=f"ray://{address}",
            health="ray-nodes",
            after="ray-head",
            log=str(settings.logs_dir / "ray-worker.log"),
        ),
    ]


def postgres_system_user(settings: Settings) -> str | None:
    """PostgreSQL refuses to run as root: pick an unprivileged system user then
    (``AIRLOOP_PG_USER``, else ``postgres``, else ``pgserver`` as the wheel does)."""
    if os.geteuid() != 0:
        return None
    for name in filter(None, [settings.pg_user, "postgres", "pgserver"]):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    # The pgserver wheel is in the control environment only (where the supervisor runs).
    from pgserver.utils import ensure_user_exists

    ensure_user_exists("pgserver")
    return "pgserver"


def port_env_var(port_name: str) -> str:
    return f"AIRLOOP_{port_name.upper()}_PORT"


def check_ports(settings: Settings, comps: list[Component]) -> None:
    """Fail with one line naming component, port and env var if a port is taken or two
    components were given the same port."""
    seen: dict[int, str] = {}
    for comp in comps:
        for port_name, port in comp.ports.items():
            if port in seen:
                raise AirloopError(
                    f"{comp.name} and {seen[port]} are both configured for port {port}; "
                    f"set {port_env_var(port_name)} to another port"
                )
            seen[port] = comp.name
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((settings.host, port))
                except OSError:
                    raise AirloopError(
                        f"{comp.name}: port {port} on {settings.host} is already in use; "
                        f"set {port_env_var(port_name)} to a free port"
                    ) from None
