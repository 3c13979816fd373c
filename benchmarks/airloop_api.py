"""Adapters from the benchmarks to airloop's own code paths.

The one place that knows how each measured airloop path is called, so the comparison
modules stay stable while the platform evolves. Each function raises (ImportError,
AirloopError, ...) when its path cannot run; the caller turns that into a
"not measured: <why>" row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Callable


END = datetime(2026, 2, 1, tzinfo=UTC)  # after every generated event timestamp


def drift_function() -> Callable:
    """``f(reference, current) -> (share, drifted_columns)``:
    :func:`airloop.runtime.evaluation.drift.drift_share` (the test the monitor step runs)."""
    from airloop.runtime.evaluation.drift import drift_share

    return drift_share


def online_reader(repo: Path, spec, store) -> Callable[[list[int]], object]:
    """``read(entity_ids)`` through airloop's raw online-store reader
    (:class:`airloop.serving.online.OnlineReader`) on the Feast store of ``repo``."""
    from airloop.serving.online import OnlineReader

    cfg = store.config.online_store
    if cfg.type == "redis":
        location = f"redis://{cfg.connection_string.split(',')[0]}"
    else:
        location = str(Path(cfg.path) if Path(cfg.path).is_absolute() else repo / cfg.path)
    views = spec.feature_views
    reader = OnlineReader(location, store.config.project, views, spec.entity_key,
                          spec.entity_dtype)
    first = reader.get([1])[0]
    if not first:
        raise RuntimeError(f"airloop reader found no features for entity 1 in {location}")
    return reader.get


@dataclass
class Endpoint:
    infer_url: str
    stop: Callable[[], None]
    entity_body: Callable[[list[int]], bytes] | None = None
    predictions: Path | None = None


def serving_settings(home: Path):
    """Settings of a private airloop home for the serving benchmark (free MLServer port)."""
    import os

    from benchmarks.common import free_port

    os.environ["AIRLOOP_HOME"] = str(home)
    os.environ["AIRLOOP_MLSERVER_PORT"] = str(free_port())
    os.environ["AIRLOOP_MLSERVER_GRPC_PORT"] = str(free_port())
    os.environ["AIRLOOP_MLSERVER_METRICS_PORT"] = str(free_port())
    from airloop.core import settings as config
    from airloop.runtime.steps.deploy import runtime_extra

    settings = config.load()
    return settings, runtime_extra


def start_endpoint(settings, spec, model_uri: str, version: str) -> Endpoint:
    """MLServer (serving venv, settings like ``airloop up`` writes) with the model deployed
    by :func:`airloop.runtime.steps.deploy.deploy_local`: ``AirloopRuntime``, request logging on,
    loaded through the repository API, smoke-tested."""
    import json

    from airloop.core.layout import layout
    from airloop.runtime.steps.deploy import deploy_local

    from benchmarks.common import spawn, stop, venv, wait_http

    repo = settings.model_repository
    repo.mkdir(parents=True, exist_ok=True)
    p = settings.ports
    (repo / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": p["mlserver"], "grpc_port": p["mlserver_grpc"],
        "metrics_port": p["mlserver_metrics"], "parallel_workers": 0,
        "load_models_at_startup": True, "metrics_dir": str(settings.home / "serving" / "metrics"),
        "environments_dir": str(settings.home / "serving" / "envs")}))
    log = settings.home / "mlserver.log"
    proc = spawn([venv("serving", "mlserver"), "start", str(repo)], log)
    base = settings.model_server_url.rstrip("/")
    try:
        wait_http(f"{base}/v2/health/ready", 240, proc, log)
        out = deploy_local(spec, version=version, model_uri=model_uri, settings=settings,
                           timeout=240)
    except BaseException:
        stop(proc)
        raise

    def entity_body(ids: list[int]) -> bytes:
        return json.dumps({"inputs": [{"name": spec.entity_key, "shape": [len(ids)],
                                       "datatype": "INT64", "data": ids}]}).encode()

    return Endpoint(out["endpoint"], lambda: stop(proc), entity_body,
                    layout(spec, settings).predictions)


def materialize_function(workdir: Path, frame, redis_url: str | None) -> Callable:
    """``prepare() -> go()``: ``prepare`` lays out a fresh airloop home with ``frame`` as
    the project's dataset (untimed); ``go`` runs :func:`airloop.runtime.features.store.materialize`
    (apply + incremental materialization offline -> online), what the step runs. A
    fresh home per round, because an incremental materialization repeats nothing."""
    import itertools
    import os

    from airloop.core import settings as config
    from airloop.runtime.features.store import materialize
    from airloop.core.layout import layout

    from benchmarks.data import spec as load

    spec = load()
    counter = itertools.count()

    def prepare() -> Callable[[], dict]:
        os.environ["AIRLOOP_HOME"] = str(workdir / f"home-{next(counter)}")
        if redis_url:
            os.environ["AIRLOOP_FEAST_ONLINE"] = redis_url
        else:
            os.environ.pop("AIRLOOP_FEAST_ONLINE", None)
        settings = config.load()
        paths = layout(spec, settings)
        paths.dataset.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(paths.dataset_file, index=False)
        return lambda: materialize(spec, settings, end=END)

    return prepare


def tune_function(workdir: Path) -> Callable:
    """``search(frame, full) -> (wall s, best validation score, trials stopped early)``
    with :func:`airloop.runtime.training.search.run_search`, the train step's Ray Tune search. ``full``
    runs the same configurations (same seeded sampler) with ``grace_period =
    max_iterations``, i.e. ASHA never stops a trial: every trial runs to completion."""
    import os
    import time

    os.environ["AIRLOOP_HOME"] = str(workdir)
    from airloop.core import settings as config
    from airloop.core.spec import parse_spec
    from airloop.runtime.training.search import best_trial, run_search
    from airloop.runtime.training.split import split_frame

    from benchmarks.data import spec as load

    base = load()
    settings = config.load()

    def search(frame, full: bool):
        raw = base.model_dump(mode="json")
        if full:
            raw["model"]["grace_period"] = raw["model"]["max_iterations"]
        s = parse_spec(raw, base.path)
        split = split_frame(frame, s)
        t0 = time.perf_counter()
        trials = run_search(split, s, settings, run_id=f"bench_{'full' if full else 'asha'}")
        wall = time.perf_counter() - t0
        mode = s.metric.mode
        return wall, best_trial(trials, mode).best, sum(t.status == "pruned" for t in trials)

    return search
