"""A small client for Airflow 3's public REST API (``/api/v2``) with a JWT.

Used by ``airloop demo`` and the end-to-end tests, i.e. the way an external system
drives airloop: get a token from ``/auth/token``, trigger DAG runs with a conf, wait
for them, read task results from XCom. Standard library only.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from airloop.core.errors import AirloopError

TERMINAL = {"success", "failed"}


class AirflowAPIError(AirloopError):
    """The API answered with an error status (kept: status code and body)."""

    def __init__(self, method: str, path: str, status: int, body: str):
        self.status = status
        self.body = body
        detail = body
        try:
            parsed = json.loads(body)
            detail = parsed.get("detail", body) if isinstance(parsed, dict) else body
        except ValueError:
            pass
        super().__init__(f"Airflow API {method} {path} -> {status}: {str(detail)[:400]}")


@dataclass
class AirflowClient:
    base_url: str
    username: str
    password: str
    timeout: float = 30.0
    _token: str | None = field(default=None, repr=False)
    _token_at: float = 0.0

    # -- transport ------------------------------------------------------------------
    def _raw(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url.rstrip("/") + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token()}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            raise AirflowAPIError(method, path, exc.code, exc.read().decode(errors="replace"))
        except urllib.error.URLError as exc:
            raise AirloopError(f"Airflow API at {self.base_url} unreachable: {exc.reason}")
        return json.loads(text) if text else None

    def token(self) -> str:
        # Tokens last [api_auth] jwt_expiration_time (24 h by default); refresh hourly.
        if self._token is None or time.monotonic() - self._token_at > 3600:
            out = self._raw(
                "POST",
                "/auth/token",
                {"username": self.username, "password": self.password},
                auth=False,
            )
            self._token = out["access_token"]
            self._token_at = time.monotonic()
        return self._token

    def get(self, path: str) -> Any:
        return self._raw("GET", path)

    # -- API ------------------------------------------------------------------------
    def health(self) -> dict:
        return self._raw("GET", "/api/v2/monitor/health", auth=False)

    def dag(self, dag_id: str) -> dict:
        return self.get(f"/api/v2/dags/{dag_id}")

    def wait_for_dag(self, dag_id: str, timeout: float = 180.0) -> dict:
        """Wait until the dag-processor has parsed ``dag_id``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.dag(dag_id)
            except AirflowAPIError as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(1.0)

    def unpause(self, dag_id: str) -> None:
        self._raw("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None, run_id: str | None = None) -> dict:
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self._raw("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def dag_runs(self, dag_id: str, limit: int = 20) -> list[dict]:
        out = self.get(f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after&limit={limit}")
        return out["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        rid = urllib.parse.quote(run_id, safe="")
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        rid = urllib.parse.quote(run_id, safe="")
        out = self.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances/{task_id}/xcomEntries/{key}"
            "?deserialize=true"
        )
        value = out.get("value")
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def wait(self, dag_id: str, run_id: str, timeout: float = 900.0, progress=None) -> dict:
        """Poll a run until it is terminal; ``progress(task_states)`` is called on changes."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while True:
            run = self.dag_run(dag_id, run_id)
            if progress is not None:
                states = {
                    ti["task_id"]: ti["state"] or "none"
                    for ti in self.task_instances(dag_id, run_id)
                }
                if states != seen:
                    progress({k: v for k, v in states.items() if seen.get(k) != v})
                    seen = states
            if run["state"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise AirloopError(f"{dag_id} run {run_id} not finished after {timeout:.0f}s")
            time.sleep(1.0)
