"""Settings: every environment variable airloop reads, in one typed object.

:func:`load` reads the process environment once (pydantic-settings) and entry points
pass the result down; no other module reads ``os.environ`` for configuration. The same
code runs locally (embedded defaults under one state directory) and in a pod (every
value set by the Helm chart's ConfigMap and Secret). Nothing is created at import.

A bad value is one :class:`~airloop.core.errors.AirloopError` line naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from airloop.core.errors import AirloopError

#: Repository root when running from a checkout (``include/airloop/core`` -> repo).
_PKG_DIR = Path(__file__).resolve().parents[1]
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

#: Where the KubernetesPodOperator's XCom sidecar reads a pod's result.
POD_XCOM_DIR = Path("/airflow/xcom")

Mode = Literal["local", "kubernetes"]
Target = Literal["local", "seldon", "kserve"]


def disable_telemetry(environ: dict[str, str] | None = None) -> None:
    """Switch every library's telemetry off in ``environ`` (``os.environ``) unless set."""
    target = os.environ if environ is None else environ
    for key, value in NO_TELEMETRY.items():
        target.setdefault(key, value)


#: The mapping :func:`load` reads instead of ``os.environ`` (tests, child environments).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("airloop_environ", default=None)


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source, reading :data:`_ENVIRON` when it is set."""

    def _load_env_vars(self):
        environ = _ENVIRON.get()
        if environ is None:
            return super()._load_env_vars()
        return {
            (k if self.case_sensitive else k.lower()): v
            for k, v in environ.items()
            if not (self.env_ignore_empty and v == "")
        }


def _port_field(name: str):
    return Field(DEFAULT_PORTS[name], ge=1, le=65535,
                 description=f"local port of {name.replace('_', ' ')}")


class Settings(BaseSettings):
    """Resolved settings; build with :func:`load` (or directly, in tests)."""

    model_config = SettingsConfigDict(
        env_prefix="AIRLOOP_", extra="ignore", env_ignore_empty=True, populate_by_name=True
    )

    # -- where things live ---------------------------------------------------------
    home: Path | None = Field(default=None, description="state folder of the local platform")
    projects_dir: Path | None = Field(default=None, description="folder of project specs")
    data_dir: Path | None = Field(default=None, description="projects' data, one folder per tenant")
    venvs: Path | None = Field(default=None, description="folder holding the three virtualenvs")
    dvc_remote: Path | None = Field(default=None, description="DVC remote (<home>/dvc-remote)")
    xcom_path: Path | None = Field(
        default=None, description="where a step writes its JSON result (XCom)"
    )

    # -- execution -----------------------------------------------------------------
    mode: Mode = Field("local", description="where steps run: local processes or pods")
    host: str = Field("127.0.0.1", description="address the local platform binds")
    task_retries: int = Field(2, ge=0, description="retries of every step task")
    git_commit: str | None = Field(
        None, description="commit of the code that runs (lineage; else `git rev-parse HEAD`)"
    )
    ray_address: str | None = Field(None, description="Ray cluster (host:port); unset: local Ray")
    database_url: str | None = Field(
        None, description="existing PostgreSQL for `airloop up` instead of the embedded one"
    )
    pg_user: str | None = Field(None, description="system user of the embedded PostgreSQL")

    # -- services --------------------------------------------------------------------
    tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "tracking_uri"),
        description="MLflow tracking and registry server",
    )
    model_server_url: str | None = Field(None, description="the local model server")
    feast_online: str | None = Field(
        None, description="Feast online store: redis://host:port/db, or unset for SQLite"
    )

    # -- ports of the local platform ---------------------------------------------------
    postgres_port: int = _port_field("postgres")
    airflow_port: int = _port_field("airflow")
    mlflow_port: int = _port_field("mlflow")
    mlserver_port: int = _port_field("mlserver")
    mlserver_grpc_port: int = _port_field("mlserver_grpc")
    mlserver_metrics_port: int = _port_field("mlserver_metrics")
    ray_head_port: int = _port_field("ray_head")
    ray_dashboard_port: int = _port_field("ray_dashboard")

    # -- kubernetes (the chart's tenant ConfigMap) --------------------------------------
    runtime_image: str = Field(
        "ghcr.io/airloop/runtime:0.1.0", description="image of the step pods"
    )
    namespace_prefix: str = Field("airloop-", description="tenant namespaces are <prefix><tenant>")
    namespace: str | None = Field(None, description="tenant namespace of the deploy step")
    seldon_server: str = Field("airloop-mlserver", description="Seldon Server models run on")
    service_account: str = Field(
        "airloop-model", description="ServiceAccount of KServe predictors"
    )
    storage_secret: str | None = Field(
        None, description="Secret with the object-store credentials of Seldon models"
    )
    serving_target: Target | None = Field(None, description="the chart's serving.target")
    mlflow_artifacts_uri: str | None = Field(
        None,
        description="object store behind MLflow's mlflow-artifacts:/ URIs (its "
        "--artifacts-destination); clusters pull models from there",
    )
    kubeconfig: Path | None = Field(
        None,
        validation_alias=AliasChoices("KUBECONFIG", "kubeconfig"),
        description="kubeconfig of the deploy step outside a cluster (unset: in-cluster)",
    )

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Environment(settings_cls)

    @field_validator("feast_online")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        value = (value or "").strip() or None
        if value is not None and not value.startswith(("redis://", "rediss://")):
            raise ValueError("expected redis://host:port/db or unset")
        return value

    @field_validator("mlflow_artifacts_uri")
    @classmethod
    def _artifact_root(cls, value: str | None) -> str | None:
        value = (value or "").strip().rstrip("/") or None
        if value is not None and "://" not in value:
            raise ValueError("expected an object-store URI such as s3://bucket/prefix")
        return value

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value):
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _derived(self) -> Settings:
        # Defaults that depend on other values (home, host, ports) are filled here.
        def resolve(path: Path | None, default: Path) -> Path:
            return Path(path).expanduser().resolve() if path is not None else default

        default_home = (REPO_ROOT / ".airloop") if REPO_ROOT else Path.home() / ".airloop"
        self.home = resolve(self.home, default_home)
        self.projects_dir = resolve(
            self.projects_dir,
            (REPO_ROOT / "include" / "projects") if REPO_ROOT else self.home / "projects",
        )
        self.data_dir = resolve(self.data_dir, self.home / "data")
        self.venvs = resolve(self.venvs, (REPO_ROOT / ".venvs") if REPO_ROOT else self.home / "venvs")
        self.dvc_remote = resolve(self.dvc_remote, self.home / "dvc-remote")
        if self.xcom_path is None and POD_XCOM_DIR.is_dir():
            self.xcom_path = POD_XCOM_DIR / "return.json"
        if not self.tracking_uri:
            self.tracking_uri = f"http://{self.host}:{self.mlflow_port}"
        if not self.model_server_url:
            self.model_server_url = f"http://{self.host}:{self.mlserver_port}"
        return self

    # -- derived ---------------------------------------------------------------------
    @property
    def ports(self) -> dict[str, int]:
        """Port by component name (the keys of :data:`DEFAULT_PORTS`)."""
        return {name: getattr(self, f"{name}_port") for name in DEFAULT_PORTS}

    def project_dir(self, tenant: str, project: str) -> Path:
        """Layout of a project's data: one folder per tenant and project."""
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
    def runtime_python(self) -> Path:
        return self.venvs / "runtime" / "bin" / "python"

    @property
    def serving_python(self) -> Path:
        return self.venvs / "serving" / "bin" / "python"

    def venv_tool(self, env: str, tool: str) -> Path:
        """An executable of one of the three virtualenvs (``control``, ``runtime``, ``serving``)."""
        return self.venvs / env / "bin" / tool


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    info = Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"AIRLOOP_{field.upper()}"


def load(environ: Mapping[str, str] | None = None, **overrides) -> Settings:
    """Settings from the environment (``environ`` instead of ``os.environ`` if given)
    plus explicit ``overrides``; a bad value raises one line naming the variable."""
    token = _ENVIRON.set(environ)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        name = env_name(field) if field in Settings.model_fields else field
        value = err.get("input")
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise AirloopError(f"{name}={value!r}: {err['msg']}{more}") from None
    finally:
        _ENVIRON.reset(token)


def reference() -> str:
    """Every setting as a Markdown table: variable, default, meaning (for the docs)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        shown = "derived" if default is None and name in _DERIVED else (
            "unset" if default is None else f"`{default}`")
        rows.append(f"| `{env_name(name)}` | {shown} | {info.description or ''} |")
    return "\n".join(rows) + "\n"


#: Fields whose default is computed from others in :meth:`Settings._derived`.
_DERIVED = {"home", "projects_dir", "data_dir", "venvs", "dvc_remote", "xcom_path",
            "tracking_uri", "model_server_url"}


PAGE = """# Settings

Every environment variable airloop reads, generated from
`airloop.core.settings.Settings` (`make docs`; a control test fails when this page is
stale). Each command line reads them once per process and passes the object down; a
bad value is one error line naming the variable. "derived" defaults come from
`AIRLOOP_HOME`, `AIRLOOP_HOST` and the ports (for example `MLFLOW_TRACKING_URI` is
`http://<host>:<mlflow port>`).

"""

if __name__ == "__main__":
    print(PAGE + reference(), end="")
