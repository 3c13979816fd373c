"""Project specs: the demo spec is valid; every kind of bad spec names file and field."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from airloop.core.errors import SpecError
from airloop.core.spec import load_spec, load_spec_file

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "include" / "projects" / "churn.yaml"


def test_demo_spec_is_valid_and_defaults_apply():
    spec = load_spec_file(DEMO)
    assert spec.name == "churn" and spec.tenant == "demo"
    assert len(spec.feature_columns) >= 10
    assert spec.model_name == "demo.churn"
    assert spec.serving_name == "demo-churn"
    assert spec.feature_service == "churn_v1"
    assert spec.schedules.monitor == "0 2 * * *"
    assert spec.step_resources("train")["memory"] == "1Gi"
    assert spec.model.reduction_factor == 3  # schema default filled in


def _write(tmp_path: Path, mutate, name: str = "churn") -> Path:
    raw = yaml.safe_load(DEMO.read_text())
    mutate(raw)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.pop("tenant"), "tenant: Field required"),
        (lambda r: r["data"]["columns"][0].update(dtype="float32"), "data.columns.0.dtype"),
        (lambda r: r.update(colour="blue"), "colour: Extra inputs are not permitted"),
        (lambda r: r["metric"].update(name="rmse"), "metric.name"),
        (lambda r: r["drift"].update(share_threshold=2), "drift.share_threshold"),
        (lambda r: r["features"]["views"][0]["features"].append("ghost"), "'ghost'"),
        (lambda r: r["model"]["search_space"]["max_depth"].update(low=9), "low must be < high"),
        (lambda r: r["data"]["columns"].append({"name": "churned", "dtype": "int64"}), "label"),
        (lambda r: r.update(name="Bad Name"), "name"),
    ],
)
def test_bad_spec_names_file_and_field(tmp_path, mutate, field):
    path = _write(tmp_path, mutate)
    with pytest.raises(SpecError) as err:
        load_spec_file(path)
    message = str(err.value)
    assert str(path) in message
    assert field in message
    assert "\n" not in message


def test_malformed_yaml_names_line(tmp_path):
    path = tmp_path / "churn.yaml"
    path.write_text("name: churn\ndata: [unclosed\n")
    with pytest.raises(SpecError, match=r"churn\.yaml: line \d+: malformed YAML"):
        load_spec_file(path)


def test_name_must_match_file(tmp_path):
    path = _write(tmp_path, lambda r: None, name="other")
    with pytest.raises(SpecError, match="must match the file name"):
        load_spec_file(path)


def test_unknown_project_lists_known_ones():
    with pytest.raises(SpecError, match=r"unknown project 'nope' .*churn"):
        load_spec("nope", DEMO.parent)


def test_cli_unknown_project_is_one_line_nonzero():
    exe = REPO / ".venvs" / "runtime" / "bin" / "airloop"
    proc = subprocess.run(
        [str(exe), "ingest", "--project", "nope"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [errors[0]] and "unknown project 'nope'" in errors[0]
