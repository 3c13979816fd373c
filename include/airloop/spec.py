"""Project specs: YAML files validated against ``schemas/project.schema.json``.

A spec is the only thing a data scientist writes to get the five DAGs of a project.
:func:`load_spec` returns a :class:`ProjectSpec` with defaults applied; every error
names the file and the offending field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from airloop.errors import SpecError

SCHEMA_PATH = Path(__file__).with_name("schemas") / "project.schema.json"

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

DEFAULT_SCHEDULES = {
    "ingest": "@hourly",
    "materialize": None,  # runs on the ingest asset
    "train": None,  # manual, by API, or by the monitor
    "monitor": "0 2 * * *",  # nightly
    "batch_predict": "0 3 * * *",
}


@cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def _defaults(node: dict[str, Any], data: dict[str, Any]) -> None:
    """Fill ``default`` values of object properties, recursively (in place)."""
    for key, sub in node.get("properties", {}).items():
        if key not in data and "default" in sub:
            data[key] = sub["default"]
        if isinstance(data.get(key), dict) and sub.get("type") == "object":
            _defaults(sub, data[key])
        if isinstance(data.get(key), list) and "items" in sub:
            for item in data[key]:
                if isinstance(item, dict):
                    _defaults(sub["items"], item)


def _path(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<root>"


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None
    nullable: bool = False


@dataclass(frozen=True)
class ProjectSpec:
    """A validated project spec (``raw`` keeps the full document with defaults)."""

    path: Path
    raw: dict[str, Any]

    # -- identity -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.raw["name"]

    @property
    def tenant(self) -> str:
        return self.raw["tenant"]

    @property
    def owner(self) -> str:
        return self.raw.get("owner", self.tenant)

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
        return self.raw["data"]["entity"]["join_key"]

    @property
    def entity_name(self) -> str:
        return self.raw["data"]["entity"]["name"]

    @property
    def entity_dtype(self) -> str:
        return self.raw["data"]["entity"].get("dtype", "int64")

    @property
    def timestamp(self) -> str:
        return self.raw["data"]["timestamp"]

    @property
    def label(self) -> str:
        return self.raw["data"]["label"]

    @property
    def columns(self) -> tuple[Column, ...]:
        return tuple(
            Column(
                name=c["name"],
                dtype=c["dtype"],
                min=c.get("min"),
                max=c.get("max"),
                allowed=tuple(c["allowed"]) if "allowed" in c else None,
                nullable=c.get("nullable", False),
            )
            for c in self.raw["data"]["columns"]
        )

    @property
    def feature_columns(self) -> list[str]:
        """Model inputs in a stable order: the features of every view, in spec order."""
        out: list[str] = []
        for view in self.raw["features"]["views"]:
            out.extend(f for f in view["features"] if f not in out)
        return out

    @property
    def feature_refs(self) -> list[str]:
        return [
            f"{view['name']}:{feature}"
            for view in self.raw["features"]["views"]
            for feature in view["features"]
        ]

    @property
    def feature_service(self) -> str:
        return f"{self.name}_v{self.raw['features'].get('service_version', 1)}"

    # -- sections with defaults -----------------------------------------------------
    @property
    def model(self) -> dict[str, Any]:
        return self.raw["model"]

    @property
    def metric(self) -> dict[str, Any]:
        return self.raw["metric"]

    @property
    def promotion(self) -> dict[str, Any]:
        return self.raw["promotion"]

    @property
    def drift(self) -> dict[str, Any]:
        return self.raw["drift"]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.raw["deployment"]

    @property
    def schedules(self) -> dict[str, str | None]:
        return {**DEFAULT_SCHEDULES, **self.raw.get("schedules", {})}

    def resources(self, step: str) -> dict[str, str]:
        res = self.raw.get("resources", {})
        base = {"cpu": "500m", "memory": "1Gi", "cpu_limit": "2", "memory_limit": "4Gi"}
        return {**base, **res.get("default", {}), **res.get(step, {})}


def _cross_check(raw: dict[str, Any], where: str) -> None:
    data = raw["data"]
    names = [c["name"] for c in data["columns"]]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise SpecError(f"{where}: data.columns: duplicate column(s) {sorted(dupes)}")
    reserved = {data["entity"]["join_key"], data["timestamp"], data["label"]}
    clash = reserved & set(names)
    if clash:
        raise SpecError(
            f"{where}: data.columns: {sorted(clash)} is the entity key, timestamp or label"
        )
    for i, view in enumerate(raw["features"]["views"]):
        for feature in view["features"]:
            if feature not in names:
                raise SpecError(
                    f"{where}: features.views.{i}.features: {feature!r} is not in data.columns"
                )
    view_names = [v["name"] for v in raw["features"]["views"]]
    if len(set(view_names)) != len(view_names):
        raise SpecError(f"{where}: features.views: duplicate view names")
    for key, dim in raw["model"]["search_space"].items():
        where_dim = f"{where}: model.search_space.{key}"
        if dim["type"] == "choice":
            if "values" not in dim:
                raise SpecError(f"{where_dim}: 'choice' needs 'values'")
        else:
            if "low" not in dim or "high" not in dim:
                raise SpecError(f"{where_dim}: {dim['type']!r} needs 'low' and 'high'")
            if dim["low"] >= dim["high"]:
                raise SpecError(f"{where_dim}: low must be < high")
            if dim["type"] == "loguniform" and dim["low"] <= 0:
                raise SpecError(f"{where_dim}: loguniform needs low > 0")
    model = raw["model"]
    if model.get("grace_period", 1) > model.get("max_iterations", 1):
        raise SpecError(f"{where}: model.grace_period must be <= model.max_iterations")
    deployment = raw.get("deployment", {})
    if deployment.get("min_replicas", 1) > deployment.get("max_replicas", 1):
        raise SpecError(f"{where}: deployment.min_replicas must be <= max_replicas")


def parse_spec(raw: Any, path: Path) -> ProjectSpec:
    """Validate a parsed document; raise :class:`SpecError` naming file and field."""
    import jsonschema

    where = str(path)
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: a project spec must be a mapping, got {type(raw).__name__}")
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: (len(e.path), str(e.path)))
    if errors:
        first = errors[0]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SpecError(f"{where}: {_path(first)}: {first.message}{more}")
    raw = json.loads(json.dumps(raw))  # deep copy, plain types only
    for section in ("promotion", "drift", "deployment", "schedules", "resources"):
        raw.setdefault(section, {})
    _defaults(schema(), raw)
    _cross_check(raw, where)
    return ProjectSpec(path=path, raw=raw)


def load_spec_file(path: Path) -> ProjectSpec:
    import yaml

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


def load_spec(project: str, projects_dir: Path | None = None) -> ProjectSpec:
    """Load the spec of ``project`` from the projects folder (settings by default)."""
    if projects_dir is None:
        from airloop.config import load

        projects_dir = load().projects_dir
    path = projects_dir / f"{project}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in spec_files(projects_dir)) or "none"
        raise SpecError(f"unknown project {project!r} (known in {projects_dir}: {known})")
    return load_spec_file(path)


def load_all(projects_dir: Path) -> list[ProjectSpec]:
    """Every spec in the folder; the first invalid one raises."""
    return [load_spec_file(p) for p in spec_files(projects_dir)]
