"""Project specs: typed pydantic models, the one source of the schema and its defaults.

A spec is the only thing a data scientist writes to get the five DAGs of a project.
:func:`load_spec` returns a validated, immutable :class:`ProjectSpec` with every
default filled in; every error names the file and the offending field.
``schemas/project.schema.json`` is generated from these models (``make schema``; a
control test fails when it is stale), for editors and the spec reference.
"""

from __future__ import annotations

import json
import sys
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from airloop.core.errors import SpecError

SCHEMA_PATH = Path(__file__).with_name("schemas") / "project.schema.json"
SCHEMA_ID = "https://airloop.io/schemas/project.schema.json"

#: The pipeline steps, in DAG order (each is ``airloop <step>``).
STEPS = (
    "ingest",
    "materialize",
    "train",
    "register",
    "gate",
    "deploy",
    "promote",
    "monitor",
    "batch_predict",
)

Ident = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
Metric = Literal["roc_auc", "accuracy", "f1", "log_loss"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- data ---------------------------------------------------------------------------
class Entity(_Section):
    name: Ident
    join_key: Ident
    dtype: Literal["int64", "string"] = "int64"


class Column(_Section):
    """A feature column with the expectations ingest validates."""

    name: Ident
    dtype: Literal["int64", "float64", "string"]
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = Field(None, min_length=1)
    nullable: bool = False


class Data(_Section):
    format: Literal["csv", "parquet"] = Field(
        "csv", description="Format of files dropped in the landing zone."
    )
    generator: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="Dotted path module:function of a synthetic batch generator (demo projects).",
    )
    entity: Entity
    timestamp: str = Field(description="Event timestamp column (UTC).")
    label: str = Field(description="Binary label column (0/1).")
    columns: tuple[Column, ...] = Field(
        min_length=1, description="Feature columns with their expectations (validated on ingest)."
    )
    min_rows: int = Field(1, ge=1, description="A landing file with fewer rows is rejected.")


# -- features -----------------------------------------------------------------------
class View(_Section):
    name: Ident
    description: str = ""
    features: tuple[str, ...] = Field(min_length=1)


class Features(_Section):
    service_version: int = Field(
        1, ge=1, description="Feature service is named <project>_v<version>."
    )
    ttl_days: int = Field(3650, ge=1)
    views: tuple[View, ...] = Field(min_length=1)


# -- model search -------------------------------------------------------------------
class _Range(_Section):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self):
        if self.low >= self.high:
            raise ValueError("low must be < high")
        return self


class Uniform(_Range):
    type: Literal["uniform"]


class LogUniform(_Range):
    type: Literal["loguniform"]

    @model_validator(mode="after")
    def _positive(self):
        if self.low <= 0:
            raise ValueError("loguniform needs low > 0")
        return self


class RandInt(_Range):
    type: Literal["randint"]
    low: int
    high: int


class Choice(_Section):
    type: Literal["choice"]
    values: tuple[Any, ...] = Field(min_length=1)


Dimension = Annotated[Uniform | LogUniform | RandInt | Choice, Field(discriminator="type")]


class Model(_Section):
    family: str = Field(
        description="Dotted path module:Class of a model family (see airloop.runtime.models)."
    )
    search_space: dict[str, Dimension] = Field(min_length=1)
    num_samples: int = Field(12, ge=1, le=1000)
    max_iterations: int = Field(
        40, ge=1, description="Training iterations per trial (ASHA max_t)."
    )
    grace_period: int = Field(5, ge=1)
    reduction_factor: float = Field(3, gt=1)
    max_concurrent_trials: int = Field(2, ge=1)
    holdout_days: int = Field(
        3, ge=1, description="Most recent days held out for evaluation and the promotion gate."
    )
    seed: int = 7

    @model_validator(mode="after")
    def _grace(self):
        if self.grace_period > self.max_iterations:
            raise ValueError("grace_period must be <= max_iterations")
        return self


class MetricSpec(_Section):
    name: Metric
    mode: Literal["max", "min"] = "max"


class Promotion(_Section):
    min_metric: float | None = Field(None, description="Absolute floor a challenger must reach.")
    min_improvement: float = Field(
        0.0, description="Margin over the champion on the same holdout."
    )


class Drift(_Section):
    share_threshold: float = Field(
        0.3, ge=0, le=1, description="Dataset drift when this share of columns drift."
    )
    window_hours: int = Field(
        24, ge=1, description="Prediction log window compared with the reference."
    )
    min_rows: int = Field(100, ge=1, description="Fewer logged predictions than this: no verdict.")
    performance_drop: float = Field(
        0.05,
        ge=0,
        description="Retrain when the labelled metric falls this far below the model's holdout metric.",
    )
    cooldown_hours: float = Field(6, ge=0)
    max_retrains_per_day: int = Field(2, ge=0)


class Schedules(_Section):
    """Cron strings, presets (``@daily``) or null (manual / triggered only)."""

    ingest: str | None = "@hourly"
    materialize: str | None = Field(None, description="null: runs on the ingest asset")
    train: str | None = Field(None, description="null: manual, by API, or by the monitor")
    monitor: str | None = "0 2 * * *"
    batch_predict: str | None = "0 3 * * *"


class Deployment(_Section):
    target: Literal["local", "seldon", "kserve"] = "local"
    canary_traffic: int = Field(0, ge=0, le=100)
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _replicas(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must be <= max_replicas")
        return self


class Resources(_Section):
    cpu: str | None = None
    memory: str | None = None
    cpu_limit: str | None = None
    memory_limit: str | None = None


#: Pod resources of a step that its spec does not set.
DEFAULT_RESOURCES = {"cpu": "500m", "memory": "1Gi", "cpu_limit": "2", "memory_limit": "4Gi"}
ResourceKey = Literal["default", *STEPS]  # type: ignore[valid-type]


# -- the spec -------------------------------------------------------------------------
class ProjectSpec(_Section):
    """A validated project spec: one ML project of one tenant."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="airloop project spec",
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": SCHEMA_ID,
            "description": "One ML project of one tenant: data, features, model search, "
            "promotion gate, drift policy and schedules. DAGs are generated from it.",
        },
    )

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]{1,38}$",
        description="Project id; prefixes its DAG ids (<name>__train) and names its registered model.",
    )
    tenant: str = Field(
        pattern=r"^[a-z][a-z0-9-]{1,30}$",
        description="Owning organisation; maps to a Kubernetes namespace and an isolated data folder.",
    )
    description: str | None = None
    owner: str | None = Field(
        None, description="Contact shown as the DAG owner and on Feast objects (default: tenant)."
    )
    data: Data
    features: Features
    model: Model
    metric: MetricSpec
    promotion: Promotion = Promotion()
    drift: Drift = Drift()
    schedules: Schedules = Schedules()
    deployment: Deployment = Deployment()
    resources: dict[ResourceKey, Resources] = Field(
        default_factory=dict,
        description="Pod resources per step in kubernetes mode (default applies to unlisted steps).",
    )

    _path: Path = PrivateAttr(default=Path("<spec>"))

    # -- identity -------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The file this spec was read from."""
        return self._path

    @property
    def contact(self) -> str:
        """The owner, or the tenant when the spec names none."""
        return self.owner or self.tenant

    @property
    def model_name(self) -> str:
        """Registered model name in MLflow (tenant-qualified: names are global)."""
        return f"{self.tenant}.{self.name}"

    @property
    def serving_name(self) -> str:
        """Model name on the model server and in Kubernetes objects (DNS-safe)."""
        return f"{self.tenant}-{self.name}".replace("_", "-")

    @property
    def feast_project(self) -> str:
        """Feast project name (letters, digits and underscores only)."""
        return f"{self.tenant}_{self.name}".replace("-", "_")

    # -- data -----------------------------------------------------------------------
    @property
    def entity_key(self) -> str:
        return self.data.entity.join_key

    @property
    def entity_name(self) -> str:
        return self.data.entity.name

    @property
    def entity_dtype(self) -> str:
        return self.data.entity.dtype

    @property
    def timestamp(self) -> str:
        return self.data.timestamp

    @property
    def label(self) -> str:
        return self.data.label

    @property
    def columns(self) -> tuple[Column, ...]:
        return self.data.columns

    @cached_property
    def feature_columns(self) -> list[str]:
        """Model inputs in a stable order: the features of every view, in spec order."""
        out: list[str] = []
        for view in self.features.views:
            out.extend(f for f in view.features if f not in out)
        return out

    @property
    def categorical_features(self) -> list[str]:
        """The feature columns of dtype ``string``."""
        dtypes = {c.name: c.dtype for c in self.columns}
        return [f for f in self.feature_columns if dtypes[f] == "string"]

    @property
    def feature_refs(self) -> list[str]:
        return [f"{view.name}:{feature}" for view in self.features.views for feature in view.features]

    @property
    def feature_views(self) -> dict[str, list[str]]:
        """Features of each view, by view name."""
        return {view.name: list(view.features) for view in self.features.views}

    @property
    def feature_service(self) -> str:
        return f"{self.name}_v{self.features.service_version}"

    def step_resources(self, step: str) -> dict[str, str]:
        """Pod resources of ``step``: its own, else ``default``, else airloop's defaults."""
        out = dict(DEFAULT_RESOURCES)
        for key in ("default", step):
            if key in self.resources:
                out.update(self.resources[key].model_dump(exclude_none=True))
        return out


def schema() -> dict[str, Any]:
    """The JSON schema of a project spec, generated from :class:`ProjectSpec`."""
    return ProjectSpec.model_json_schema()


# -- validation -----------------------------------------------------------------------
def _field(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) if loc else "<root>"


def _cross_check(spec: ProjectSpec, where: str) -> None:
    """What the schema cannot say: names that must agree across sections."""
    data = spec.data
    names = [c.name for c in data.columns]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise SpecError(f"{where}: data.columns: duplicate column(s) {sorted(dupes)}")
    reserved = {data.entity.join_key, data.timestamp, data.label}
    clash = reserved & set(names)
    if clash:
        raise SpecError(
            f"{where}: data.columns: {sorted(clash)} is the entity key, timestamp or label"
        )
    for i, view in enumerate(spec.features.views):
        for feature in view.features:
            if feature not in names:
                raise SpecError(
                    f"{where}: features.views.{i}.features: {feature!r} is not in data.columns"
                )
    view_names = [v.name for v in spec.features.views]
    if len(set(view_names)) != len(view_names):
        raise SpecError(f"{where}: features.views: duplicate view names")


def parse_spec(raw: Any, path: Path) -> ProjectSpec:
    """Validate a parsed document; raise :class:`SpecError` naming file and field."""
    where = str(path)
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: a project spec must be a mapping, got {type(raw).__name__}")
    try:
        spec = ProjectSpec.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        msg = first["msg"].removeprefix("Value error, ")
        got = first.get("input")
        if first["type"] not in ("missing", "value_error") and not isinstance(got, (dict, list)):
            msg += f" (got {got!r})"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SpecError(f"{where}: {_field(first['loc'])}: {msg}{more}") from None
    spec._path = Path(path)
    _cross_check(spec, where)
    return spec


def load_spec_file(path: Path) -> ProjectSpec:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read project spec ({exc.strerror})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}:{at}: malformed YAML: {getattr(exc, 'problem', exc)}") from exc
    spec = parse_spec(raw, path)
    if spec.name != path.stem:
        raise SpecError(f"{path}: name: {spec.name!r} must match the file name {path.stem!r}")
    return spec


def spec_files(projects_dir: Path) -> list[Path]:
    return sorted(p for p in projects_dir.glob("*.yaml") if not p.name.startswith("_"))


def load_spec(project: str, projects_dir: Path) -> ProjectSpec:
    """Load the spec of ``project`` from the projects folder."""
    path = projects_dir / f"{project}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in spec_files(projects_dir)) or "none"
        raise SpecError(f"unknown project {project!r} (known in {projects_dir}: {known})")
    return load_spec_file(path)


def load_all(projects_dir: Path) -> list[ProjectSpec]:
    """Every spec in the folder; the first invalid one raises."""
    return [load_spec_file(p) for p in spec_files(projects_dir)]


def main(argv: list[str] | None = None) -> int:
    """``python -m airloop.core.spec`` prints the generated JSON schema."""
    del argv
    print(json.dumps(schema(), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
