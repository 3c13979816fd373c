"""Comparison 6: materialization offline -> online, rows/s, SQLite and Redis.

airloop's materialization (:mod:`airloop.runtime.features.store`) and Feast's SDK
``materialize`` (DuckDB offline store) vs the floor: a raw write of the same rows,
already serialized, to the same store (one SQLite transaction with ``executemany``;
a non-transactional Redis pipeline of HSETs). Rows = entity rows (all feature views).
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import Goal, Row, main, median, not_measured, result, why

CMP = "6 materialization"
ROWS = 20_000
ROUNDS = 2
START, END = datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)


def _serialized(frame, s):
    """Per view: (entity_key bytes, feature name, value bytes, ts) tuples, as Feast stores them."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    def value(v):
        if isinstance(v, str):
            return Value(string_val=v)
        if isinstance(v, float):
            return Value(double_val=v)
        return Value(int64_val=int(v))

    keys = [serialize_entity_key(EntityKey(join_keys=[s.entity_key],
                                           entity_values=[Value(int64_val=int(i))]),
                                 entity_key_serialization_version=3)
            for i in frame[s.entity_key]]
    out = {}
    for view in s.features.views:
        recs = []
        cols = {f: frame[f].tolist() for f in view.features}
        ts = [t.to_pydatetime().replace(tzinfo=None) for t in frame[s.timestamp]]
        for i, k in enumerate(keys):
            for f in view.features:
                recs.append((k, f, value(cols[f][i]).SerializeToString(), ts[i]))
        out[view.name] = recs
    return keys, out


def run(workdir: Path) -> dict:
    from benchmarks import airloop_api
    from benchmarks.data import churn_frame, spec
    from benchmarks.feast_repo import PROJECT, build_store, start_redis

    s = spec()
    rows: list[Row] = []
    goals: list[Goal] = []
    frame = churn_frame(ROWS, seed=9)
    keys, recs = _serialized(frame, s)
    redis_proc, redis_port = start_redis(workdir)
    try:
        for kind in ["sqlite"] + (["redis"] if redis_port else []):
            case = f"{kind}, {ROWS // 1000}k rows x {len(s.feature_columns)} features"
            repo = workdir / f"repo-{kind}"
            store, _, _ = build_store(repo, frame, kind, redis_port)
            # airloop's path
            try:
                prepare = airloop_api.materialize_function(
                    workdir / f"airloop-{kind}", frame,
                    f"redis://127.0.0.1:{redis_port}/0" if kind == "redis" else None)
                vals = []
                for _ in range(ROUNDS):
                    go = prepare()
                    t0 = time.perf_counter()
                    go()
                    vals.append(ROWS / (time.perf_counter() - t0))
                rows.append(Row(CMP, case, "airloop materialize (apply + incremental)", "airloop",
                                "throughput", "rows/s", vals, lower_is_better=False))
            except Exception as exc:
                rows.append(not_measured(CMP, case, "airloop materialize", "airloop", why(exc)))
            # Feast SDK
            vals = []
            for _ in range(ROUNDS):
                t0 = time.perf_counter()
                store.materialize(START, END)
                vals.append(ROWS / (time.perf_counter() - t0))
            rows.append(Row(CMP, case, "feast SDK materialize (DuckDB offline)", "peer",
                            "throughput", "rows/s", vals, lower_is_better=False))
            feast_rate = median(vals)
            # floor
            vals = []
            for _ in range(ROUNDS):
                if kind == "sqlite":
                    conn = sqlite3.connect(str(repo / "online.db"))
                    t0 = time.perf_counter()
                    with conn:
                        for view, data in recs.items():
                            conn.executemany(
                                f'INSERT OR REPLACE INTO "{PROJECT}_{view}" '
                                "(entity_key, feature_name, value, event_ts) VALUES (?, ?, ?, ?)",
                                data)
                    vals.append(ROWS / (time.perf_counter() - t0))
                    conn.close()
                else:
                    import redis

                    rc = redis.Redis(host="127.0.0.1", port=redis_port)
                    t0 = time.perf_counter()
                    pipe = rc.pipeline(transaction=False)
                    for view, data in recs.items():
                        for j, (k, f, v, _ts) in enumerate(data):
                            pipe.hset(k, f"{view}:{f}", v)
                            if j % 5000 == 4999:
                                pipe.execute()
                    pipe.execute()
                    vals.append(ROWS / (time.perf_counter() - t0))
            rows.append(Row(CMP, case, f"raw {'sqlite executemany' if kind == 'sqlite' else 'redis pipelined HSET'} (pre-serialized)",
                            "floor", "throughput", "rows/s", vals, lower_is_better=False))
            goals.append(Goal(CMP, f"feast materialize vs raw write ({kind}, informational)",
                              f"{feast_rate / median(vals):.2f}x of the raw write rate", None))
    finally:
        if redis_proc:
            from benchmarks.common import stop

            stop(redis_proc)
    if not redis_port:
        rows.append(not_measured(CMP, "redis", "all paths", "-", "redis-server binary not found"))
    return result(rows, goals)


if __name__ == "__main__":
    main(run)
