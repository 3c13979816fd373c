"""The package by plane: import contracts, light command lines, the generated schema.

The contracts themselves live in ``pyproject.toml`` (``[tool.importlinter]``) and are
checked with import-linter; a copy of the package with one forbidden import proves that
the check is not blind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(pythonpath: list[Path]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath)}
    return subprocess.run(
        [str(LINT), "--no-cache", str(REPO / "pyproject.toml")],
        capture_output=True, text=True, env=env, timeout=300, cwd=REPO,
    )


def test_plane_contracts_hold():
    proc = _lint([REPO / "plugins"])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout and "broken" not in proc.stdout.split("Contracts:")[-1].replace("0 broken", "")


@pytest.mark.parametrize(
    ("module", "bad_import", "contract"),
    [
        ("airloop/core/errors.py", "import airloop.runtime.models", "the core imports no plane"),
        ("airloop/serving/feedback.py", "import airloop.runtime.tracking",
         "serving never imports the runtime"),
        ("airloop/core/naming.py", "import pandas", "the core imports no plane"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, bad_import, contract):
    shutil.copytree(REPO / "include" / "airloop", tmp_path / "src" / "airloop")
    shutil.copytree(REPO / "plugins" / "airloop_ops", tmp_path / "plugins" / "airloop_ops")
    target = tmp_path / "src" / module
    target.write_text(target.read_text() + f"\n{bad_import}  # deliberately forbidden\n")
    proc = _lint([tmp_path / "src", tmp_path / "plugins"])
    assert proc.returncode != 0
    assert f"{contract}" in proc.stdout and "BROKEN" in proc.stdout


LIGHT = ["mlflow", "ray", "feast", "pandas", "numpy", "sklearn", "evidently",
         "great_expectations", "dvc", "mlserver", "airflow", "kubernetes", "psycopg2",
         "airflow_client"]


@pytest.mark.parametrize("module", ["airloop.cli", "airloop.runtime.cli", "airloop.devstack.cli",
                                    "airloop.serving.cli", "airloop.demo.cli"])
def test_command_lines_import_no_heavy_library(module):
    """Routing a command and printing help load no plane's libraries."""
    code = (f"import sys, {module} as m; m.build_parser([]) if hasattr(m, 'build_parser') "
            "else m.usage(); print(sorted({n.split('.')[0] for n in sys.modules}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    loaded = set(json.loads(proc.stdout.strip().replace("'", '"')))
    assert not loaded & set(LIGHT), loaded & set(LIGHT)


def test_router_passes_global_options_to_the_plane():
    """``airloop -v <command>``: the option before the command reaches the plane's parser."""
    exe = Path(sys.executable).with_name("airloop")
    env = {**os.environ, "AIRLOOP_HOME": str(REPO / ".airloop-nonexistent-home")}
    before = subprocess.run([str(exe), "-v", "status", "--json"], capture_output=True,
                            text=True, timeout=120, env=env)
    after = subprocess.run([str(exe), "status", "-v", "--json"], capture_output=True,
                           text=True, timeout=120, env=env)
    for proc in (before, after):
        assert proc.returncode == 1  # not running: unhealthy, but parsed and answered
        assert json.loads(proc.stdout)["components"] == []
    unknown = subprocess.run([str(exe), "-v", "fly"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown command 'fly'")


def test_committed_schema_is_generated_from_the_models():
    from airloop.core.spec import SCHEMA_PATH, schema

    assert json.loads(SCHEMA_PATH.read_text()) == schema(), (
        "include/airloop/core/schemas/project.schema.json is stale: run `make schema`"
    )


def test_settings_page_is_generated_from_the_model():
    from airloop.core.settings import PAGE, reference

    page = (REPO / "docs" / "settings.md").read_text()
    assert page == PAGE + reference(), "docs/settings.md is stale: run `make docs`"
