"""Deploy step: serve this DAG run's registered model version.

``airloop deploy --project P --run-id R``

Input: the model version of ``spec.model_name`` tagged ``airloop.dag_run_id = R`` (made
by the register step; none is an error). For ``deployment.target == "local"``:

1. download the model artifacts to ``<model_repository>/<serving_name>/v<version>``;
2. write ``<model_repository>/<serving_name>/model-settings.json`` atomically
   (implementation :class:`airloop.serving.mlserver.AirloopRuntime`, ``parameters.uri``,
   ``version`` and ``extra``: features, views, online store, log folders);
3. load it through MLServer's repository API and wait until that version is ready
   (MLServer unloads the previously served version once the new one is loaded);
4. send one smoke request (entity id only when the online store has rows, else the
   newest dataset row with every feature) and require a score back.

``seldon`` and ``kserve`` hand over to :func:`airloop.runtime.serving_targets.kubernetes.deploy`.

Output: ``{"target", "serving_name", "version", "endpoint", "feedback_endpoint",
"smoke_score", "loaded"}``. Idempotent: re-deploying the version already served skips
the download and the load (``loaded`` is false) and only repeats the smoke request.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from airloop.core.settings import Settings
from airloop.core.errors import AirloopError
from airloop.core.layout import layout
from airloop.core.spec import ProjectSpec

log = logging.getLogger("airloop.deploy")

RUNTIME = "airloop.serving.mlserver.AirloopRuntime"


def add_arguments(parser) -> None:
    parser.add_argument(
        "--timeout", type=float, default=180.0,
        help="seconds to wait for the model server to load the model (default 180)",
    )


def find_version(spec: ProjectSpec, run_id: str, tracking_uri: str):
    """The model version registered by DAG run ``run_id`` (the newest if several)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{spec.model_name}'", max_results=10000)
    except mlflow.exceptions.MlflowException as exc:
        raise AirloopError(f"cannot list versions of {spec.model_name}: {exc.message}") from exc
    mine = [v for v in versions if (v.tags or {}).get("airloop.dag_run_id") == run_id]
    if not mine:
        raise AirloopError(
            f"no version of model {spec.model_name} is tagged airloop.dag_run_id={run_id!r} "
            "(did the register step run in this DAG run?)"
        )
    return max(mine, key=lambda v: int(v.version))


def runtime_extra(spec: ProjectSpec, settings: Settings, version: str) -> dict[str, Any]:
    """``parameters.extra`` of the model settings read by ``AirloopRuntime``.

    ``online_store`` is where the project's Feast online store lives, in the form
    :class:`airloop.serving.online.OnlineReader` takes: the ``redis://`` URL when
    ``AIRLOOP_FEAST_ONLINE`` configures Redis (production), else the SQLite file."""
    from airloop.runtime.features.store import online_location

    paths = layout(spec, settings)
    return {
        "project": spec.name,
        "tenant": spec.tenant,
        "serving_name": spec.serving_name,
        "model_version": str(version),
        "join_key": spec.entity_key,
        "entity_dtype": spec.entity_dtype,
        "features": spec.feature_columns,
        "views": spec.feature_views,
        "feast_project": spec.feast_project,
        "online_store": online_location(spec, settings),
        "predictions": str(paths.predictions),
        "feedback": str(paths.feedback),
    }


def _http(method: str, url: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw.strip() else None
    except urllib.error.HTTPError as exc:
        raw = exc.read().decode(errors="replace")
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw
    except (urllib.error.URLError, OSError) as exc:
        raise AirloopError(f"model server {url} is unreachable: {exc}") from exc


def _download(name: str, version: str, dest: Path) -> None:
    """Model artifacts into ``dest`` (atomic: a partial download never lands there)."""
    import mlflow

    if (dest / "MLmodel").is_file():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(tmp))
        )
        if not (local / "MLmodel").is_file():
            raise AirloopError(f"models:/{name}/{version} has no MLmodel file")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(local, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_atomic(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _ready(base: str, name: str, version: str) -> bool:
    status, _ = _http("GET", f"{base}/v2/models/{name}/versions/{version}/ready", timeout=5)
    return status == 200


def _smoke_request(spec: ProjectSpec, settings: Settings, extra: dict) -> dict:
    """Entity id only when the online store has rows, else the newest dataset row."""
    from airloop.serving.online import OnlineReader, OnlineStoreUnavailable

    rid = f"smoke-{uuid.uuid4().hex[:12]}"
    reader = OnlineReader(extra["online_store"], extra["feast_project"], extra["views"],
                          spec.entity_key, spec.entity_dtype)
    try:
        entities = reader.sample_entities(1)
        if entities and reader.get(entities)[0] is not None:
            return {"id": rid, "inputs": [_v2_input(spec.entity_key, entities)]}
    except OnlineStoreUnavailable:
        pass
    finally:
        reader.close()
    dataset = layout(spec, settings).dataset_file
    if not dataset.is_file():
        raise AirloopError(
            f"no smoke input: the online store {extra['online_store']} has no rows "
            f"and {dataset} does not exist"
        )
    import pandas as pd

    frame = pd.read_parquet(dataset, columns=[spec.timestamp, *spec.feature_columns])
    row = frame.sort_values(spec.timestamp).tail(1)
    return {
        "id": rid,
        "inputs": [_v2_input(c, row[c].tolist()) for c in spec.feature_columns],
    }


def _v2_input(name: str, values: list) -> dict:
    values = [v.item() if hasattr(v, "item") else v for v in values]
    if all(isinstance(v, bool) for v in values):
        dtype = "BOOL"
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        dtype = "INT64"
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        dtype = "FP64"
    else:
        dtype, values = "BYTES", [str(v) for v in values]
    return {"name": name, "shape": [len(values)], "datatype": dtype, "data": values}


def deploy_local(
    spec: ProjectSpec, *, version: str, model_uri: str, settings: Settings, timeout: float = 180.0
) -> dict[str, Any]:
    """Serve ``version`` on the local MLServer through its repository API (see module doc)."""
    name = spec.serving_name
    base = settings.model_server_url.rstrip("/")
    folder = settings.model_repository / name
    target = folder / f"v{version}"
    settings_path = folder / "model-settings.json"
    extra = runtime_extra(spec, settings, version)
    doc = {
        "name": name,
        "implementation": RUNTIME,
        "parameters": {"uri": str(target), "version": str(version), "extra": extra},
    }
    current = json.loads(settings_path.read_text()) if settings_path.is_file() else None
    loaded = False
    if current == doc and (target / "MLmodel").is_file() and _ready(base, name, version):
        log.info("%s v%s is already served; nothing to load", name, version)
    else:
        _download(spec.model_name, version, target)
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(settings_path, doc)
        status, answer = _http("POST", f"{base}/v2/repository/models/{name}/load",
                               timeout=timeout)
        if status != 200:
            # Keep serving what was served: put the previous settings back.
            if current is not None:
                _write_atomic(settings_path, current)
            else:
                settings_path.unlink(missing_ok=True)
            msg = answer.get("error") if isinstance(answer, dict) else answer
            raise AirloopError(f"model server could not load {name} v{version}: {status} {msg}")
        loaded = True
        deadline = time.monotonic() + timeout
        while not _ready(base, name, version):
            if time.monotonic() > deadline:
                raise AirloopError(f"{name} v{version} not ready after {timeout:.0f}s")
            time.sleep(0.5)
        _prune(folder, keep=str(version), previous=current)
    endpoint = f"{base}/v2/models/{name}/infer"
    request = _smoke_request(spec, settings, extra)
    status, answer = _http("POST", endpoint, request, timeout=60)
    outputs = {o["name"]: o["data"] for o in (answer or {}).get("outputs", [])} \
        if isinstance(answer, dict) else {}
    if status != 200 or not outputs.get("score") or not outputs.get("prediction"):
        raise AirloopError(f"smoke request to {endpoint} failed: {status} {answer}")
    if answer.get("model_version") not in (None, str(version)):
        raise AirloopError(
            f"smoke request answered by version {answer.get('model_version')}, not {version}"
        )
    return {
        "target": "local",
        "serving_name": name,
        "version": str(version),
        "model_uri": model_uri,
        "endpoint": endpoint,
        "feedback_endpoint": f"{base}/v2/models/{name}/feedback",
        "smoke_score": float(outputs["score"][0]),
        "smoke_input": "entity" if len(request["inputs"]) == 1 else "features",
        "loaded": loaded,
    }


def _prune(folder: Path, keep: str, previous: dict | None) -> None:
    """Keep the served version folder and the one before it (quick rollback)."""
    prev = str(((previous or {}).get("parameters") or {}).get("version", ""))
    wanted = {f"v{keep}"} | ({f"v{prev}"} if prev else set())
    for path in folder.glob("v*"):
        if path.is_dir() and path.name not in wanted:
            shutil.rmtree(path, ignore_errors=True)


def run(spec: ProjectSpec, *, run_id: str, settings: Settings, timeout: float = 180.0) -> dict:
    """Deploy the version registered by ``run_id`` to ``spec.deployment.target``.

    Raises :class:`AirloopError` when the run registered no version, the model server
    refuses or cannot load it, or the smoke request gets no prediction back.
    """
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    mv = find_version(spec, run_id, settings.tracking_uri)
    version = str(mv.version)
    model_uri = f"models:/{spec.model_name}/{version}"
    target = spec.deployment.target
    if target == "local":
        return deploy_local(spec, version=version, model_uri=model_uri, settings=settings,
                            timeout=timeout)
    if target in ("seldon", "kserve"):
        from airloop.runtime.serving_targets import kubernetes as k8s_serving

        result = k8s_serving.deploy(spec, version=version, model_uri=model_uri,
                                    settings=settings)
        return {"target": target, "serving_name": spec.serving_name, "version": version,
                **result}
    raise AirloopError(f"unknown deployment target {target!r}")
