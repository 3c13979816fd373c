"""Comparison 2: online feature retrieval for 1 and 100 entities.

Paths on the same Feast store (SQLite, and Redis in the production profile):
airloop's raw reader in-process (:mod:`airloop.serving.online`), airloop over HTTP
(the model endpoint's entity-only request minus the predict cost, measured in the
prediction comparison), Feast's SDK in-process and ``feast serve`` over HTTP (peers),
and the raw store lookup (floor: one SQLite SELECT per view / one pipelined Redis
HGETALL round trip, bytes fetched, no decoding).
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

from benchmarks.common import (Goal, HttpClient, Row, free_port, latency_rounds, main, median,
                               not_measured, result, stop, wait_http, why)

CMP = "2 online features"
POPULATION = 5_000
SIZES = (1, 100)
ROUNDS, N_INPROC, N_SDK, N_HTTP = 3, 200, 40, 100


def _entity_keys(ids, key: str):
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return [serialize_entity_key(EntityKey(join_keys=[key], entity_values=[Value(int64_val=i)]),
                                 entity_key_serialization_version=3) for i in ids]


def run(workdir: Path) -> dict:
    from benchmarks import airloop_api
    from benchmarks.data import churn_frame, spec
    from benchmarks.feast_repo import PROJECT, build_store, serve, start_redis

    s = spec()
    rows: list[Row] = []
    goals: list[Goal] = []
    frame = churn_frame(POPULATION, seed=3)
    rng = random.Random(5)
    batches = {n: [[rng.randint(1, POPULATION) for _ in range(n)] for _ in range(50)]
               for n in SIZES}
    redis_proc, redis_port = start_redis(workdir)
    stores = ["sqlite"] + (["redis"] if redis_port else [])
    airloop_inproc: dict[str, float] = {}
    servers = {}
    try:
        built = {}
        for kind in stores:
            repo = workdir / f"repo-{kind}"
            store, refs, service = build_store(repo, frame, kind, redis_port)
            for view in s.features.views:
                cols = [s.entity_key, s.timestamp, *view.features]
                store.write_to_online_store(view.name, frame[cols])
            port = free_port()
            # Both servers start at once: their imports take most of a minute.
            servers[kind] = serve(repo, port, workdir / f"feast-serve-{kind}.log")
            built[kind] = (repo, store, refs, port)
        for kind in stores:
            repo, store, refs, port = built[kind]
            feast_proc = servers[kind]
            wait_http(f"http://127.0.0.1:{port}/health", 240, feast_proc,
                      workdir / f"feast-serve-{kind}.log")
            try:
                reader = airloop_api.online_reader(repo, s, store)
                reader_error = None
            except Exception as exc:
                reader, reader_error = None, why(exc)
            for n in SIZES:
                case = f"{kind}, {n} entit{'y' if n == 1 else 'ies'}"
                it = iter(range(10**9))

                def ids():
                    return batches[n][next(it) % 50]

                # airloop in-process
                if reader is not None:
                    p50, p99 = latency_rounds(lambda: reader(ids()), ROUNDS, N_INPROC)
                    rows.append(Row(CMP, case, "airloop reader, in-process", "airloop",
                                    "p50", "ms", p50, f"p99 {median(p99):.3f} ms"))
                    airloop_inproc[case] = median(p50)
                else:
                    rows.append(not_measured(CMP, case, "airloop reader, in-process",
                                             "airloop", reader_error))
                # Feast SDK in-process
                p50, p99 = latency_rounds(
                    lambda: store.get_online_features(
                        refs, {s.entity_key: ids()}).to_dict(), ROUNDS, N_SDK)
                rows.append(Row(CMP, case, "feast SDK get_online_features", "peer", "p50",
                                "ms", p50, f"p99 {median(p99):.3f} ms"))
                # feast serve over HTTP
                client = HttpClient(f"http://127.0.0.1:{port}/get-online-features")
                p50, p99 = latency_rounds(
                    lambda: client.post(json.dumps(
                        {"features": refs, "entities": {s.entity_key: ids()}}).encode()),
                    ROUNDS, N_HTTP)
                rows.append(Row(CMP, case, "feast serve (HTTP)", "peer", "p50", "ms", p50,
                                f"p99 {median(p99):.3f} ms"))
                # raw floor
                if kind == "sqlite":
                    conn = sqlite3.connect(str(repo / "online.db"), check_same_thread=False)
                    tables = [f"{PROJECT}_{v.name}" for v in s.features.views]
                    keys = {n2: [_entity_keys(b, s.entity_key) for b in batches[n2]]
                            for n2 in SIZES}

                    def raw():
                        k = keys[n][next(it) % 50]
                        marks = ",".join("?" * len(k))
                        for t in tables:
                            conn.execute(f'SELECT entity_key, feature_name, value FROM "{t}" '
                                         f"WHERE entity_key IN ({marks})", k).fetchall()

                    p50, p99 = latency_rounds(raw, ROUNDS, N_INPROC)
                    rows.append(Row(CMP, case, "raw sqlite3 SELECT", "floor", "p50", "ms",
                                    p50, f"p99 {median(p99):.3f} ms"))
                    conn.close()
                else:
                    import redis
                    from feast.infra.online_stores.helpers import _redis_key
                    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
                    from feast.protos.feast.types.Value_pb2 import Value

                    rc = redis.Redis(host="127.0.0.1", port=redis_port)
                    rkeys = [[_redis_key(PROJECT, EntityKey(
                        join_keys=[s.entity_key], entity_values=[Value(int64_val=i)]), 3)
                        for i in b] for b in batches[n]]

                    def raw():
                        pipe = rc.pipeline(transaction=False)
                        for k in rkeys[next(it) % 50]:
                            pipe.hgetall(k)
                        pipe.execute()

                    p50, p99 = latency_rounds(raw, ROUNDS, N_INPROC)
                    rows.append(Row(CMP, case, "raw redis pipelined HGETALL", "floor", "p50",
                                    "ms", p50, f"p99 {median(p99):.3f} ms"))
    finally:
        for proc in servers.values():
            stop(proc)
        if redis_proc:
            stop(redis_proc)
    if not redis_port:
        rows.append(not_measured(CMP, "redis", "all paths", "-", "redis-server binary not found"))
    for case, value in airloop_inproc.items():
        goals.append(Goal(CMP, f"in-process <= 0.2 ms ({case})", f"{value:.3f} ms", value <= 0.2))
    if not airloop_inproc:
        goals.append(Goal(CMP, "in-process <= 0.2 ms", "airloop reader not measured", None))
    return result(rows, goals)


if __name__ == "__main__":
    main(run)
