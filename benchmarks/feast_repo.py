"""A Feast repository for the benchmarks, shaped like the demo project's.

Built with Feast's Python API in a work folder: the demo spec's entity and feature
views over one parquet file (DuckDB offline store), SQLite or Redis online store.
Peers (``feast serve``, the SDK) and floors (raw SQL / HMGET) read the same store.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import yaml

from benchmarks.common import free_port, spawn, stop

PROJECT = "bench"


def start_redis(workdir: Path):
    """A private ``redis-server`` on a free loopback port (no persistence); None if absent."""
    binary = shutil.which("redis-server")
    if not binary:
        return None, None
    port = free_port()
    proc = spawn([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--dir", str(workdir)], workdir / "redis.log")
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc, port
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"redis-server on port {port} did not start")


def build_store(repo: Path, frame, online: str = "sqlite", redis_port: int | None = None,
                project: str = PROJECT):
    """Write ``feature_store.yaml`` + the offline parquet, apply the objects; returns
    ``(store, feature_refs, service_name)``."""
    from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64, String

    from benchmarks.data import spec as load

    s = load()
    repo.mkdir(parents=True, exist_ok=True)
    source_path = repo / "features.parquet"
    frame.to_parquet(source_path, index=False)
    online_cfg = ({"type": "sqlite", "path": str(repo / "online.db")} if online == "sqlite"
                  else {"type": "redis", "connection_string": f"127.0.0.1:{redis_port}"})
    (repo / "feature_store.yaml").write_text(yaml.safe_dump({
        "project": project,
        "registry": str(repo / "registry.db"),
        "provider": "local",
        "online_store": online_cfg,
        "offline_store": {"type": "duckdb"},
        "entity_key_serialization_version": 3,
    }))
    entity = Entity(name=s.entity_name, join_keys=[s.entity_key], value_type=ValueType.INT64)
    source = FileSource(path=str(source_path), timestamp_field=s.timestamp)
    types = {c.name: (String if c.allowed or c.dtype == "string" else
                      Int64 if c.dtype.startswith("int") else Float64) for c in s.columns}
    views = [
        FeatureView(name=v.name, entities=[entity], source=source, online=True,
                    schema=[Field(name=f, dtype=types[f]) for f in v.features])
        for v in s.features.views
    ]
    service = FeatureService(name=s.feature_service, features=views)
    store = FeatureStore(repo_path=str(repo))
    store.apply([entity, *views, service])
    return store, s.feature_refs, s.feature_service


def serve(repo: Path, port: int, log: Path) -> subprocess.Popen:
    """``feast serve`` started once through the Python API (``FeatureStore.serve``)."""
    from benchmarks.common import venv

    code = (f"from feast import FeatureStore; FeatureStore(repo_path={str(repo)!r})"
            f".serve('127.0.0.1', {port}, no_access_log=True, workers=1)")
    return spawn([venv("runtime"), "-c", code], log)
