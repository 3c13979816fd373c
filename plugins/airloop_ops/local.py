"""Local mode: run a step's argv in the runtime virtualenv as a child process.

The same ``airloop <step> --project … --run-id …`` a pod runs, launched from
``$AIRLOOP_VENVS/runtime/bin/airloop`` (the runtime environment is separate from
Airflow's). The step writes its JSON result to ``$AIRLOOP_XCOM_PATH`` (a fresh temp
file per try); the operator returns it, so it lands in XCom exactly like the pod's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

ERROR_PREFIX = "error: "


class StepFailed(AirflowException):
    """The step exited non-zero; the message is its last ``error: …`` line."""


class LocalStepOperator(BaseOperator):
    """Run ``airloop <arguments>`` from the runtime virtualenv and return its JSON result.

    :param arguments: the step argv after the program name (templated, like the pod's).
    :param runtime_cli: the ``airloop`` executable of the runtime virtualenv.
    :param env_vars: extra environment for the child (templated).

    Output lines are streamed into the task log; ``on_kill`` terminates the child's
    whole process group (steps may start Ray workers or servers); a non-zero exit
    fails the task with the step's last ``error: …`` line as the message.
    """

    template_fields: Sequence[str] = ("arguments", "env_vars")
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        arguments: Sequence[str],
        runtime_cli: str,
        env_vars: dict[str, str] | None = None,
        kill_timeout: float = 15.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.arguments = list(arguments)
        self.runtime_cli = str(runtime_cli)
        self.env_vars = dict(env_vars or {})
        self.kill_timeout = kill_timeout
        self._proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        return [self.runtime_cli, *(str(a) for a in self.arguments)]

    def execute(self, context: Any) -> Any:
        argv = self.argv()
        if not Path(argv[0]).is_file():
            raise StepFailed(
                f"runtime CLI {argv[0]} not found: build the runtime virtualenv "
                "or point AIRLOOP_VENVS at the folder holding it"
            )
        workdir = Path(tempfile.mkdtemp(prefix="airloop-xcom-"))
        xcom_path = workdir / "return.json"
        env = {**os.environ, **self.env_vars, "AIRLOOP_XCOM_PATH": str(xcom_path)}
        self.log.info("running %s", " ".join(argv))
        last_error: str | None = None
        try:
            # A new session makes the child the leader of its own process group, so
            # on_kill can stop everything it started.
            self._proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                text=True,
                errors="replace",
                bufsize=1,
                start_new_session=True,
            )
            assert self._proc.stdout is not None
            for raw in self._proc.stdout:
                line = raw.rstrip("\n")
                self.log.info("%s", line)
                if line.startswith(ERROR_PREFIX):
                    last_error = line[len(ERROR_PREFIX) :].strip()
            code = self._proc.wait()
            if code != 0:
                reason = last_error or f"exited with code {code} without an error line"
                raise StepFailed(f"airloop {self._step_name()} failed: {reason}")
            if not xcom_path.is_file():
                raise StepFailed(
                    f"airloop {self._step_name()} exited 0 but wrote no result to "
                    "$AIRLOOP_XCOM_PATH"
                )
            try:
                return json.loads(xcom_path.read_text())
            except json.JSONDecodeError as exc:
                raise StepFailed(
                    f"airloop {self._step_name()} wrote a result that is not JSON: {exc}"
                ) from exc
        finally:
            self._proc = None
            shutil.rmtree(workdir, ignore_errors=True)

    def _step_name(self) -> str:
        return str(self.arguments[0]) if self.arguments else "<no step>"

    def on_kill(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(self.kill_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
