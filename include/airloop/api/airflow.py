"""Airflow 3's public REST API (``/api/v2``) through the official ``apache-airflow-client``.

The way an external system drives airloop: :func:`fetch_token` gets a JWT from
``POST /auth/token``; an :class:`AirflowClient` then unpauses DAGs, triggers runs with a
conf, waits for them and reads task results from XCom. Responses are the client's own
pydantic models (``run.state.value``, ``run.dag_run_id``, ...).

Errors: an HTTP error status becomes :class:`AirflowAPIError` (``.status`` and the raw
``.body`` kept); an unreachable api-server is one :class:`AirloopError` line.

``airflow_client`` takes about two seconds to import (it loads every API eagerly), so it
is imported when the first client is built, not with this module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from airloop.core.errors import AirloopError
from airloop.core.io import http_json

if TYPE_CHECKING:
    import airflow_client.client as afc

#: DAG run states after which a run no longer changes by itself.
TERMINAL = {"success", "failed"}
#: Tokens last ``[api_auth] jwt_expiration_time`` (24 h by default); refresh well before.
TOKEN_MAX_AGE_S = 3600.0


class AirflowAPIError(AirloopError):
    """The API answered with an error status; ``status`` and the raw ``body`` are kept."""

    def __init__(self, what: str, status: int, body: str | None):
        self.status = status
        self.body = body or ""
        detail: Any = self.body
        try:
            parsed = json.loads(self.body)
            if isinstance(parsed, dict):
                detail = parsed.get("detail", self.body)
        except ValueError:
            pass
        super().__init__(f"Airflow API {what} -> {status}: {str(detail)[:400]}")


def fetch_token(base_url: str, username: str, password: str, *, timeout: float = 30.0) -> str:
    """Return a JWT for the REST API (``Authorization: Bearer <token>``).

    POSTs the credentials to ``<base_url>/auth/token`` (SimpleAuthManager and FAB both
    serve it; the client package has no method for it). Raises :class:`AirflowAPIError`
    on an error status and :class:`AirloopError` when the server is unreachable."""
    url = f"{base_url.rstrip('/')}/auth/token"
    status, answer = http_json(
        "POST", url, {"username": username, "password": password}, timeout=timeout
    )
    if status not in (200, 201) or not isinstance(answer, dict) or "access_token" not in answer:
        body = answer if isinstance(answer, str) else json.dumps(answer)
        raise AirflowAPIError("POST /auth/token", status, body)
    return answer["access_token"]


def _sdk():
    import airflow_client.client as sdk  # ~2 s: every API module is imported eagerly

    return sdk


class AirflowClient:
    """One Airflow api-server at ``base_url`` (``http://host:port``, no ``/api/v2``).

    ``timeout`` is the read timeout of each request (connecting gets at most 10 s); a
    token is fetched on first use and refreshed every :data:`TOKEN_MAX_AGE_S`."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self._credentials = (username, password)
        self._timeout = (min(10.0, float(timeout)), float(timeout))
        self._token_at: float | None = None
        self._sdk = _sdk()
        self._config = self._sdk.Configuration(host=self.base_url)
        self._api = self._sdk.ApiClient(self._config)

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection pool."""
        self._api.rest_client.pool_manager.clear()

    # -- transport ------------------------------------------------------------------
    def token(self) -> str:
        """The current JWT, fetched again when older than :data:`TOKEN_MAX_AGE_S`."""
        if self._token_at is None or time.monotonic() - self._token_at > TOKEN_MAX_AGE_S:
            self._config.access_token = fetch_token(
                self.base_url, *self._credentials, timeout=self._timeout[1]
            )
            self._token_at = time.monotonic()
        return self._config.access_token

    def _call(self, what: str, method: Callable[..., Any], *args: Any, auth: bool = True,
              **kwargs: Any) -> Any:
        """``method(*args, **kwargs)`` with this client's timeout and error contract."""
        import urllib3

        if auth:
            self.token()
        try:
            return method(*args, _request_timeout=self._timeout, **kwargs)
        except self._sdk.ApiException as exc:
            raise AirflowAPIError(what, exc.status, exc.body) from None
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise AirloopError(f"Airflow API at {self.base_url} is unreachable: {reason}") from None

    # -- API ------------------------------------------------------------------------
    def health(self) -> afc.HealthInfoResponse:
        """``GET /api/v2/monitor/health`` (no token needed): ``.scheduler.status``, ..."""
        monitor = self._sdk.MonitorApi(self._api)
        return self._call("GET health", monitor.get_health, auth=False)

    def dag(self, dag_id: str) -> afc.DAGResponse:
        return self._call(f"GET dag {dag_id}", self._sdk.DAGApi(self._api).get_dag, dag_id)

    def wait_for_dag(self, dag_id: str, timeout: float = 180.0) -> afc.DAGResponse:
        """Wait until the dag-processor has parsed ``dag_id`` (404 until then)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.dag(dag_id)
            except AirflowAPIError as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(1.0)

    def unpause(self, dag_id: str) -> afc.DAGResponse:
        body = self._sdk.DAGPatchBody(is_paused=False)
        return self._call(f"unpause {dag_id}", self._sdk.DAGApi(self._api).patch_dag,
                          dag_id, body, update_mask=["is_paused"])

    def tasks(self, dag_id: str) -> list[afc.TaskResponse]:
        """The DAG's tasks (``.task_id``, ``.downstream_task_ids``, ...)."""
        out = self._call(f"GET tasks of {dag_id}", self._sdk.TaskApi(self._api).get_tasks, dag_id)
        return out.tasks

    def trigger(self, dag_id: str, conf: dict | None = None,
                run_id: str | None = None) -> afc.DAGRunResponse:
        """Start a run now; Airflow 3 requires ``logical_date`` (sent as null)."""
        body = self._sdk.TriggerDAGRunPostBody(logical_date=None, conf=conf or {},
                                               dag_run_id=run_id)
        return self._call(f"trigger {dag_id}", self._sdk.DagRunApi(self._api).trigger_dag_run,
                          dag_id, body)

    def dag_run(self, dag_id: str, run_id: str) -> afc.DAGRunResponse:
        return self._call(f"GET {dag_id} run {run_id}",
                          self._sdk.DagRunApi(self._api).get_dag_run, dag_id, run_id)

    def dag_runs(self, dag_id: str, limit: int = 20) -> list[afc.DAGRunResponse]:
        """The ``limit`` most recent runs, newest first (by ``run_after``)."""
        out = self._call(f"GET runs of {dag_id}", self._sdk.DagRunApi(self._api).get_dag_runs,
                         dag_id, order_by=["-run_after"], limit=limit)
        return out.dag_runs

    def task_instances(self, dag_id: str, run_id: str) -> list[afc.TaskInstanceResponse]:
        api = self._sdk.TaskInstanceApi(self._api)
        out = self._call(f"GET task instances of {dag_id} run {run_id}",
                         api.get_task_instances, dag_id, run_id)
        return out.task_instances

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """A task's XCom value, deserialized (a pod step's ``return.json``)."""
        out = self._call(f"GET xcom {key} of {dag_id}.{task_id} run {run_id}",
                         self._sdk.XComApi(self._api).get_xcom_entry,
                         dag_id, task_id, run_id, key, deserialize=True)
        value = out.actual_instance.value
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def clear_task_instances(self, dag_id: str, run_id: str, task_ids: Iterable[str], *,
                             include_downstream: bool = False) -> list[afc.TaskInstanceResponse]:
        """Clear ``task_ids`` of a run (whatever their state) so that they run again; the
        run goes back to queued. Returns the cleared task instances."""
        sdk = self._sdk
        body = sdk.ClearTaskInstancesBody(
            dag_run_id=run_id,
            task_ids=[sdk.ClearTaskInstancesBodyTaskIdsInner(t) for t in task_ids],
            # The API's defaults are a dry run of the failed tasks only.
            dry_run=False,
            only_failed=False,
            include_downstream=include_downstream,
            reset_dag_runs=True,
        )
        out = self._call(f"clear {dag_id} run {run_id}",
                         sdk.TaskInstanceApi(self._api).post_clear_task_instances, dag_id, body)
        return out.task_instances

    def wait(self, dag_id: str, run_id: str, timeout: float = 900.0,
             progress: Callable[[dict[str, str]], None] | None = None) -> afc.DAGRunResponse:
        """Poll a run until it is terminal and return it.

        ``progress({task_id: state})`` is called with the tasks whose state changed."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while True:
            run = self.dag_run(dag_id, run_id)
            if progress is not None:
                states = {
                    t.task_id: t.state.value if t.state else "none"
                    for t in self.task_instances(dag_id, run_id)
                }
                if states != seen:
                    progress({k: v for k, v in states.items() if seen.get(k) != v})
                    seen = states
            if run.state.value in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise AirloopError(f"{dag_id} run {run_id} not finished after {timeout:.0f}s")
            time.sleep(1.0)
