"""Settings from the environment.

Every path and URL a step or service uses comes from here, so that the same code runs
locally (embedded defaults under one state directory) and in a pod (everything set by
environment variables from the Helm chart). Nothing is created or configured at import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: Repository root when running from a checkout (``include/airloop`` -> repo).
_PKG_DIR = Path(__file__).resolve().parent
REPO_ROOT = _PKG_DIR.parents[1] if (_PKG_DIR.parents[1] / "dags").is_dir() else None

#: Default local ports. They avoid PostgreSQL (5432), Redis (6379), RabbitMQ (5672,
#: 15672, 25672), MariaDB (3306), Mosquitto (1883), NATS (4222) and common dev ports.
DEFAULT_PORTS = {
    "postgres": 15432,
    "airflow": 18080,
    "mlflow": 15000,
    "mlserver": 18081,
    "mlserver_grpc": 18082,
    "mlserver_metrics": 18083,
    "ray_head": 16379,
    "ray_dashboard": 18265,
}

#: Telemetry of every bundled library is off in every process airloop starts.
NO_TELEMETRY = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "FEAST_USAGE": "False",
    "SCARF_ANALYTICS": "false",
    "AIRFLOW__CORE__ANALYTICS_ENABLED": "False",
    "RAY_AUTH_MODE": "disabled",
}


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


def _port(name: str) -> int:
    env = f"AIRLOOP_{name.upper()}_PORT"
    raw = os.environ.get(env)
    if raw is None:
        return DEFAULT_PORTS[name]
    try:
        return int(raw)
    except ValueError as exc:  # a clear one-liner instead of a traceback
        from airloop.errors import AirloopError

        raise AirloopError(f"{env}={raw!r} is not a port number") from exc


@dataclass(frozen=True)
class Settings:
    """Resolved settings; build with :func:`load`."""

    home: Path
    projects_dir: Path
    data_dir: Path
    mode: str
    host: str
    ports: dict[str, int] = field(default_factory=dict)
    tracking_uri: str = ""
    model_server_url: str = ""
    database_url: str | None = None
    runtime_python: Path | None = None
    serving_python: Path | None = None
    xcom_path: Path | None = None
    ray_address: str | None = None
    git_commit: str | None = None

    # Layout of a project's data: one folder per tenant and project.
    def project_dir(self, tenant: str, project: str) -> Path:
        return self.data_dir / tenant / project

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def model_repository(self) -> Path:
        return self.home / "serving" / "models"

    @property
    def dvc_remote(self) -> Path:
        return _env_path("AIRLOOP_DVC_REMOTE", self.home / "dvc-remote")


def load() -> Settings:
    """Read settings from the environment (cheap; call it where needed)."""
    default_home = (REPO_ROOT / ".airloop") if REPO_ROOT else Path.home() / ".airloop"
    home = _env_path("AIRLOOP_HOME", default_home)
    default_projects = (REPO_ROOT / "include" / "projects") if REPO_ROOT else home / "projects"
    host = os.environ.get("AIRLOOP_HOST", "127.0.0.1")
    ports = {name: _port(name) for name in DEFAULT_PORTS}
    venvs = _env_path("AIRLOOP_VENVS", (REPO_ROOT / ".venvs") if REPO_ROOT else home / "venvs")
    return Settings(
        home=home,
        projects_dir=_env_path("AIRLOOP_PROJECTS_DIR", default_projects),
        data_dir=_env_path("AIRLOOP_DATA_DIR", home / "data"),
        mode=os.environ.get("AIRLOOP_MODE", "local"),
        host=host,
        ports=ports,
        tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", f"http://{host}:{ports['mlflow']}"),
        model_server_url=os.environ.get(
            "AIRLOOP_MODEL_SERVER_URL", f"http://{host}:{ports['mlserver']}"
        ),
        database_url=os.environ.get("AIRLOOP_DATABASE_URL") or None,
        runtime_python=venvs / "runtime" / "bin" / "python",
        serving_python=venvs / "serving" / "bin" / "python",
        xcom_path=_env_path("AIRLOOP_XCOM_PATH", Path("/airflow/xcom/return.json"))
        if os.environ.get("AIRLOOP_XCOM_PATH") or Path("/airflow/xcom").is_dir()
        else None,
        ray_address=os.environ.get("AIRLOOP_RAY_ADDRESS") or None,
        git_commit=os.environ.get("AIRLOOP_GIT_COMMIT") or None,
    )
