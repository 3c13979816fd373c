"""Local mode: the operator really runs a child process.

A throwaway ``airloop`` executable in a temp ``$AIRLOOP_VENVS/runtime/bin`` stands in
for the runtime CLI (the real steps need the runtime services); it records its argv and
environment into the JSON result it writes to ``$AIRLOOP_XCOM_PATH``.
"""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO

from airloop.core.spec import load_spec

SPEC = load_spec("churn", REPO / "include" / "projects")

OK_SCRIPT = """
import json, os, sys
print("airloop: step started", sys.argv[1], file=sys.stderr, flush=True)
print("some progress", flush=True)
result = {"argv": sys.argv[1:], "xcom": os.environ["AIRLOOP_XCOM_PATH"],
          "extra": os.environ.get("AIRLOOP_PROBE")}
with open(os.environ["AIRLOOP_XCOM_PATH"], "w") as fh:
    json.dump(result, fh)
print(json.dumps(result))
"""

FAIL_SCRIPT = """
import sys
print("error: a first problem that is not the last one", file=sys.stderr)
print("working...")
print("error: landing file day-3.csv failed expectations: 7 rows with age < 18", file=sys.stderr)
sys.exit(3)
"""

SILENT_FAIL_SCRIPT = """
import sys
sys.exit(4)
"""

NO_RESULT_SCRIPT = """
print("done, but forgot the result")
"""

SLEEPER_SCRIPT = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
with open(os.environ["AIRLOOP_PROBE"], "w") as fh:
    fh.write(f"{os.getpid()} {child.pid}")
time.sleep(120)
"""


def _fake_cli(venvs: Path, body: str) -> Path:
    cli = venvs / "runtime" / "bin" / "airloop"
    cli.parent.mkdir(parents=True, exist_ok=True)
    cli.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    cli.chmod(0o755)
    return cli


@pytest.fixture
def local_op(tmp_path, monkeypatch):
    """Build a step operator through the factory, in local mode, with a fake CLI."""
    from airloop.core.settings import load

    settings = load({"AIRLOOP_MODE": "local", "AIRLOOP_VENVS": str(tmp_path / "venvs")})

    def make(body: str, step: str = "ingest", **kwargs):
        from airloop_ops import step_operator

        _fake_cli(tmp_path / "venvs", body)
        op = step_operator(SPEC, step, settings, **kwargs)
        op.render_template_fields({"run_id": "manual__local-1", "params": {"trigger": "api"}})
        return op

    return make


def test_runs_the_argv_and_returns_the_xcom_json(local_op, monkeypatch, caplog):
    op = local_op(OK_SCRIPT, "train", extra_args=["--trigger", "{{ params.trigger }}"])
    assert type(op).__name__ == "LocalStepOperator"
    assert op.argv()[0].endswith("venvs/runtime/bin/airloop")
    monkeypatch.setenv("AIRLOOP_PROBE", "inherited")
    result = op.execute(context={})
    expected = ["train", "--project", "churn", "--run-id", "manual__local-1", "--trigger", "api"]
    assert result["argv"] == expected
    assert result["extra"] == "inherited"
    # A fresh temp file per try, removed afterwards.
    assert Path(result["xcom"]).name == "return.json"
    assert not Path(result["xcom"]).parent.exists()


def test_output_lines_are_streamed_to_the_task_log(local_op):
    op = local_op(OK_SCRIPT)
    lines: list[str] = []
    original = op.log.info

    def capture(msg, *args, **kwargs):
        lines.append(msg % args if args else msg)
        return original(msg, *args, **kwargs)

    op.log.info = capture
    try:
        op.execute(context={})
    finally:
        op.log.info = original
    assert "airloop: step started ingest" in lines
    assert "some progress" in lines


def test_failure_raises_the_last_error_line(local_op):
    from airloop_ops.local import StepFailed

    op = local_op(FAIL_SCRIPT, "ingest")
    with pytest.raises(StepFailed) as err:
        op.execute(context={})
    assert str(err.value) == (
        "airloop ingest failed: landing file day-3.csv failed expectations: 7 rows with age < 18"
    )


def test_failure_without_error_line_names_the_exit_code(local_op):
    from airloop_ops.local import StepFailed

    with pytest.raises(StepFailed, match="exited with code 4"):
        local_op(SILENT_FAIL_SCRIPT).execute(context={})


def test_success_without_result_is_a_failure(local_op):
    from airloop_ops.local import StepFailed

    with pytest.raises(StepFailed, match="wrote no result"):
        local_op(NO_RESULT_SCRIPT).execute(context={})


def test_missing_runtime_cli_is_a_clear_error(tmp_path, monkeypatch):
    from airloop_ops import step_operator
    from airloop_ops.local import StepFailed

    from airloop.core.settings import load

    settings = load({"AIRLOOP_MODE": "local", "AIRLOOP_VENVS": str(tmp_path / "nowhere")})
    with pytest.raises(StepFailed, match="nowhere/runtime/bin/airloop not found"):
        step_operator(SPEC, "gate", settings).execute(context={})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) is not alive either.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_on_kill_stops_the_whole_process_group(local_op, tmp_path, monkeypatch):
    probe = tmp_path / "pids"
    monkeypatch.setenv("AIRLOOP_PROBE", str(probe))
    op = local_op(SLEEPER_SCRIPT, "monitor")
    op.kill_timeout = 5
    errors: list[BaseException] = []

    def run():
        try:
            op.execute(context={})
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while not (probe.exists() and probe.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.1)
    parent, child = (int(p) for p in probe.read_text().split())
    assert _alive(parent) and _alive(child)
    op.on_kill()
    thread.join(30)
    assert not thread.is_alive()
    gone_by = time.monotonic() + 10
    while _alive(child) and time.monotonic() < gone_by:
        time.sleep(0.1)
    assert not _alive(parent)
    assert not _alive(child), "the step's own child survived on_kill"
    assert errors and "exited with code -15" in str(errors[0])


#: A step result of the usual shape (strings, a float, null, a boolean, a list, non-ASCII).
RESULT_TEXT = (
    '{"version": "3", "smoke_score": 0.125, "previous_version": null, "loaded": false,'
    ' "applied": ["Model/demo-churn-v3"], "note": "d\\u00e9j\\u00e0 servi"}\n'
)

RESULT_SCRIPT = f"""
import json, os
with open(os.environ["AIRLOOP_XCOM_PATH"], "w") as fh:
    fh.write({RESULT_TEXT!r})
# stdout is the task log, not the result (a pod's result is only its return.json)
print(json.dumps({{"version": "stdout is not the result"}}))
"""


class _SidecarReader:
    """What the pod manager's XCom sidecar hands back: ``cat /airflow/xcom/return.json``."""

    def __init__(self, text: str):
        self.text = text

    def extract_xcom(self, pod, ignore_kill_failure=True):
        return self.text


def test_result_is_what_a_pod_returns_for_the_same_file(local_op):
    """The local operator returns what KubernetesPodOperator returns for the same
    return.json: the provider's own extract_xcom reads the file's text (through a stub of
    its sidecar reader) and is the oracle; stdout never becomes the result."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airloop_ops import step_operator

    from airloop.core.settings import load

    local = local_op(RESULT_SCRIPT, "deploy").execute(context={})
    pod_op = step_operator(SPEC, "deploy", load({"AIRLOOP_MODE": "kubernetes"}))
    assert isinstance(pod_op, KubernetesPodOperator)
    # pod_manager is a cached_property: seeding the instance's cache replaces it without
    # building the real one (which would look for cluster credentials)
    pod_op.__dict__["pod_manager"] = _SidecarReader(RESULT_TEXT)
    from_pod = pod_op.extract_xcom(pod=None)
    assert local == from_pod
    assert local["note"] == "d\u00e9j\u00e0 servi" and local["previous_version"] is None
    assert local["version"] == "3"


def test_result_that_is_not_json_is_a_failure(local_op):
    from airloop_ops.local import StepFailed

    script = 'import os\nopen(os.environ["AIRLOOP_XCOM_PATH"], "w").write("{version: 3")\n'
    with pytest.raises(StepFailed, match="wrote a result that is not JSON"):
        local_op(script).execute(context={})
