"""Deploy step: serve this DAG run's registered model version.

``airloop deploy --project P --run-id R``

Input: the model version of ``spec.model_name`` tagged ``airloop.dag_run_id = R`` (made
by the register step, found by :func:`airloop.runtime.tracking.require_challenger`; none
is an error). For ``deployment.target == "local"``:

1. download the model artifacts to ``<model_repository>/<serving_name>/v<version>``;
2. write ``<model_repository>/<serving_name>/model-settings.json`` atomically
   (implementation :class:`airloop.serving.mlserver.AirloopRuntime`, ``parameters.uri``,
   ``version`` and ``extra``: features, views, online store, log folders);
3. load it through MLServer's repository API and wait until that version is ready
   (MLServer unloads the previously served version once the new one is loaded);
4. send one smoke request (an entity id only, when Feast's online store has a complete
   row for one of the dataset's newest entities; else the newest dataset row with every
   feature) and require a score back.

``seldon`` and ``kserve`` hand one
:class:`~airloop.runtime.serving_targets.kubernetes.ServingRequest` to
:func:`airloop.runtime.serving_targets.kubernetes.deploy`: the integer version, the
registry's download URI mapped to a URI the cluster can pull (``mlflow-artifacts:/``
paths under ``AIRLOOP_MLFLOW_ARTIFACTS_URI``) and the ``champion`` it replaces as the
other side of a canary split.

Output (local): ``{"target", "serving_name", "version", "model_uri", "endpoint",
"feedback_endpoint", "smoke_score", "smoke_input", "loaded"}``; (Kubernetes):
``{"target", "serving_name", "namespace", "version", "model_uri", "endpoint",
"canary_traffic", "previous_version", "applied"}``. Idempotent: re-deploying the version
already served locally skips the download and the load (``loaded`` is false) and only
repeats the smoke request; on Kubernetes, server-side apply of the same objects changes
nothing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from airloop.core.errors import AirloopError
from airloop.core.io import error_detail, http_json, write_json
from airloop.core.layout import layout
from airloop.core.settings import Settings
from airloop.core.spec import ProjectSpec
from airloop.core.v2 import frame_columns, v2_request
from airloop.runtime import tracking
from airloop.runtime.features.store import online_features, online_location
from airloop.runtime.serving_targets import kubernetes as k8s_serving
from airloop.runtime.steps.promote import CHAMPION

log = logging.getLogger("airloop.deploy")

RUNTIME = "airloop.serving.mlserver.AirloopRuntime"
#: The smoke request looks for an online row among this many of the newest entities.
SMOKE_CANDIDATES = 1000


def add_arguments(parser) -> None:
    parser.add_argument(
        "--timeout", type=float, default=180.0,
        help="seconds to wait for the model server to load the model (default 180)",
    )


def runtime_extra(spec: ProjectSpec, settings: Settings, version: str) -> dict[str, Any]:
    """``parameters.extra`` of the model settings read by ``AirloopRuntime``.

    ``online_store`` is where the project's Feast online store lives, in the form the
    serving plane's online reader takes: the ``redis://`` URL when
    ``AIRLOOP_FEAST_ONLINE`` configures Redis (production), else the SQLite file."""
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


def _download(name: str, version: str, dest: Path, settings: Settings) -> None:
    """Model artifacts into ``dest`` (atomic: a partial download never lands there)."""
    if (dest / "MLmodel").is_file():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        local = Path(mlflow.artifacts.download_artifacts(
            f"models:/{name}/{version}", dst_path=str(tmp),
            tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri,
        ))
        if not (local / "MLmodel").is_file():
            raise AirloopError(f"models:/{name}/{version} has no MLmodel file")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(local, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ready(base: str, name: str, version: str) -> bool:
    status, _ = http_json("GET", f"{base}/v2/models/{name}/versions/{version}/ready", timeout=5)
    return status == 200


def smoke_request(spec: ProjectSpec, settings: Settings) -> dict:
    """A one-row V2 request: an entity id only when the online store has a complete row.

    Feast cannot list the entities of an online store, so the candidates are the
    dataset's :data:`SMOKE_CANDIDATES` newest entities, read online through the Feast
    SDK (:func:`~airloop.runtime.features.store.online_features`); the first with every
    feature is sent as an id (the server joins its features). Without one (nothing
    materialized yet, or no feature service registered), the newest dataset row is
    sent with every feature.
    """
    rid = f"smoke-{uuid.uuid4().hex[:12]}"
    dataset = layout(spec, settings).dataset_file
    if not dataset.is_file():
        raise AirloopError(f"no smoke input: {dataset} does not exist (run the ingest step)")
    frame = pd.read_parquet(dataset, columns=[spec.entity_key, spec.timestamp,
                                              *spec.feature_columns])
    frame = frame.sort_values(spec.timestamp, kind="stable")
    newest = frame[spec.entity_key].drop_duplicates(keep="last").tail(SMOKE_CANDIDATES)
    try:
        online = online_features(spec, settings, newest.tolist()[::-1])
    except AirloopError as exc:  # feature service not registered: nothing online yet
        log.info("smoke request without online features: %s", exc)
    else:
        complete = online.dropna(subset=spec.feature_columns)
        if len(complete):
            return v2_request({spec.entity_key: complete[spec.entity_key].head(1).tolist()}, rid)
    return v2_request(frame_columns(frame.tail(1)[spec.feature_columns]), rid)


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
        _download(spec.model_name, version, target, settings)
        write_json(settings_path, doc)
        status, answer = http_json("POST", f"{base}/v2/repository/models/{name}/load",
                                   timeout=timeout)
        if status != 200:
            # Keep serving what was served: put the previous settings back.
            if current is not None:
                write_json(settings_path, current)
            else:
                settings_path.unlink(missing_ok=True)
            raise AirloopError(
                f"model server could not load {name} v{version}: {status} {error_detail(answer)}"
            )
        loaded = True
        deadline = time.monotonic() + timeout
        while not _ready(base, name, version):
            if time.monotonic() > deadline:
                raise AirloopError(f"{name} v{version} not ready after {timeout:.0f}s")
            time.sleep(0.5)
        _prune(folder, keep=str(version), previous=current)
    endpoint = f"{base}/v2/models/{name}/infer"
    request = smoke_request(spec, settings)
    status, answer = http_json("POST", endpoint, request, timeout=60)
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


def kubernetes_request(spec: ProjectSpec, client: mlflow.MlflowClient, version: int,
                       settings: Settings) -> k8s_serving.ServingRequest:
    """The request for a Kubernetes target: ``version``, the registry's download URI as a
    URI the cluster pulls, and the current champion (unless it is this version)."""
    name = spec.model_name
    download_uri = client.get_model_version_download_uri(name, str(version))
    champion = tracking.alias_version(client, name, CHAMPION)
    previous = int(champion.version) if champion is not None else None
    return k8s_serving.ServingRequest(
        version=version,
        model_uri=k8s_serving.storage_uri(download_uri, settings.mlflow_artifacts_uri),
        previous_version=None if previous == version else previous,
    )


def run(spec: ProjectSpec, *, run_id: str, settings: Settings, timeout: float = 180.0) -> dict:
    """Deploy the version registered by ``run_id`` to ``spec.deployment.target``.

    Raises :class:`AirloopError` when the run registered no version, the artifacts cannot
    be pulled by the cluster, the model server or the Kubernetes API refuses it, or the
    local smoke request gets no prediction back.
    """
    client = tracking.client(settings)
    version = int(tracking.require_challenger(client, spec, run_id).version)
    target = spec.deployment.target
    if target == "local":
        model_uri = f"models:/{spec.model_name}/{version}"
        return deploy_local(spec, version=str(version), model_uri=model_uri, settings=settings,
                            timeout=timeout)
    if target in k8s_serving.TARGETS:
        request = kubernetes_request(spec, client, version, settings)
        return {"serving_name": spec.serving_name,
                **k8s_serving.deploy(spec, request, settings=settings)}
    raise AirloopError(f"unknown deployment target {target!r}")
