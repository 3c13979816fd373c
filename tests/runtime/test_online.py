"""The model server's online-feature reader against stores written by the real Feast SDK.

Feast (runtime venv) writes a SQLite online store, and a Redis one on the machine's
Redis; :class:`airloop.serving.online.OnlineReader` must return exactly what
``FeatureStore.get_online_features`` returns, for present and missing entities.
"""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from airloop.serving import online
from airloop.serving.online import keys, values
from airloop.serving.online import redis as online_redis

VIEWS = {
    "profile": ["age", "plan", "vip"],
    "activity": ["charges", "calls", "ratio32"],
}


def _store(tmp_path, online_store: dict, project: str):
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
    from feast.types import Bool, Float32, Float64, Int64, String

    rows = 6
    now = datetime.now(UTC).replace(microsecond=0)
    df = pd.DataFrame(
        {
            "customer_id": list(range(1, rows + 1)),
            "event_timestamp": [now - timedelta(minutes=i) for i in range(rows)],
            "age": [20 + i for i in range(rows)],
            "plan": ["basic", "pro", "basic", "büro", "pro", ""],
            "vip": [i % 2 == 0 for i in range(rows)],
            "charges": [10.5 * i - 3.25 for i in range(rows)],
            "calls": [-(2**40) + i for i in range(rows)],
            "ratio32": [0.1 * i for i in range(rows)],
        }
    )
    df["ratio32"] = df["ratio32"].astype("float32")
    source_path = tmp_path / "source.parquet"
    df.to_parquet(source_path)
    source = FileSource(path=str(source_path), timestamp_field="event_timestamp")
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    profile = FeatureView(
        name="profile",
        entities=[customer],
        ttl=timedelta(days=30),
        schema=[Field(name="age", dtype=Int64), Field(name="plan", dtype=String),
                Field(name="vip", dtype=Bool)],
        source=source,
    )
    activity = FeatureView(
        name="activity",
        entities=[customer],
        ttl=timedelta(days=30),
        schema=[Field(name="charges", dtype=Float64), Field(name="calls", dtype=Int64),
                Field(name="ratio32", dtype=Float32)],
        source=source,
    )
    config = RepoConfig(
        project=project,
        registry=str(tmp_path / "registry.db"),
        provider="local",
        online_store=online_store,
        offline_store={"type": "duckdb"},
        entity_key_serialization_version=3,
        repo_path=str(tmp_path),
    )
    store = FeatureStore(config=config)
    store.apply([customer, profile, activity])
    # profile: every entity; activity: only the first four (a partially present entity)
    store.write_to_online_store("profile", df[["customer_id", "event_timestamp", *VIEWS["profile"]]])
    store.write_to_online_store(
        "activity", df.iloc[:4][["customer_id", "event_timestamp", *VIEWS["activity"]]]
    )
    return store


def _feast_rows(store, ids):
    refs = [f"{v}:{f}" for v, fs in VIEWS.items() for f in fs]
    got = store.get_online_features(
        features=refs, entity_rows=[{"customer_id": i} for i in ids]
    ).to_dict()
    return [{f: got[f][n] for fs in VIEWS.values() for f in fs} for n in range(len(ids))]


def _compare(reader, store, ids):
    mine = reader.get(ids)
    theirs = _feast_rows(store, ids)
    for entity, m, t in zip(ids, mine, theirs):
        if m is None:
            assert all(v is None for v in t.values()), (entity, t)
            continue
        assert m.keys() == t.keys()
        for feature in m:
            if isinstance(t[feature], float):
                assert m[feature] == pytest.approx(t[feature], rel=1e-7), (entity, feature)
            else:
                assert m[feature] == t[feature], (entity, feature, m[feature], t[feature])
                assert type(m[feature]) is type(t[feature]), (entity, feature)
    return mine


def test_entity_key_encoding_equals_feast():
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    for value in (0, 1, 42, -7, 2**62, -(2**63)):
        theirs = serialize_entity_key(
            EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=value)]),
            entity_key_serialization_version=3,
        )
        assert keys.serialize_entity_key("customer_id", value, "int64") == theirs
        assert keys.deserialize_entity_key(theirs) == {"customer_id": value}
    for value in ("abc", "ü-ß", ""):
        theirs = serialize_entity_key(
            EntityKey(join_keys=["user"], entity_values=[Value(string_val=value)]),
            entity_key_serialization_version=3,
        )
        assert keys.serialize_entity_key("user", value, "string") == theirs
    theirs = serialize_entity_key(
        EntityKey(join_keys=["k"], entity_values=[Value(int32_val=-5)]),
        entity_key_serialization_version=3,
    )
    assert keys.serialize_entity_key("k", -5, "int32") == theirs
    # ids arrive from JSON as floats or strings: coerce, but reject non-integers
    assert keys.serialize_entity_key("k", 3.0) == keys.serialize_entity_key("k", "3")
    for bad in (3.5, "x", True):
        with pytest.raises(ValueError):
            keys.serialize_entity_key("k", bad)


def test_value_decoding_equals_protobuf():
    from feast.protos.feast.types.Value_pb2 import Null, Value

    cases = [
        Value(int64_val=-(2**50)), Value(int32_val=-3), Value(double_val=2.5),
        Value(float_val=0.25), Value(bool_val=True), Value(bool_val=False),
        Value(string_val="héllo"), Value(bytes_val=b"\x00\x01"), Value(int64_val=0),
        Value(null_val=Null.NULL), Value(),
    ]
    expected = [-(2**50), -3, 2.5, 0.25, True, False, "héllo", b"\x00\x01", 0, None, None]
    # around the fast paths' edges: one-byte varints end at 127, one-byte lengths at 127
    edges = [
        (Value(int64_val=127), 127), (Value(int64_val=128), 128), (Value(int64_val=-1), -1),
        (Value(string_val=""), ""), (Value(string_val="x" * 127), "x" * 127),
        (Value(string_val="y" * 128), "y" * 128), (Value(double_val=-0.0), -0.0),
        (Value(double_val=float("inf")), float("inf")), (Value(double_val=1e-300), 1e-300),
    ]
    cases, expected = cases + [c for c, _ in edges], expected + [w for _, w in edges]
    for proto, want in zip(cases, expected):
        got = values.decode_value(proto.SerializeToString())
        assert got == want and type(got) is type(want), (proto, got)
    with pytest.raises(ValueError, match="scalar"):
        from feast.protos.feast.types.Value_pb2 import Int64List

        values.decode_value(Value(int64_list_val=Int64List(val=[1, 2])).SerializeToString())


def test_sqlite_reader_matches_feast(tmp_path):
    db = tmp_path / "online.db"
    store = _store(tmp_path, {"type": "sqlite", "path": str(db)}, "t_online")
    reader = online.OnlineReader(db, "t_online", VIEWS, "customer_id", "int64")
    ids = [1, 3, 5, 99, 2, 1, 6]  # 5, 6: profile only; 99: unknown; 1 twice
    rows = _compare(reader, store, ids)
    assert rows[3] is None
    assert rows[0]["plan"] == "basic" and rows[0]["age"] == 20 and rows[0]["vip"] is True
    assert rows[2]["charges"] is None and rows[2]["age"] == 24  # absent from one view
    assert reader.get([]) == []
    assert sorted(reader.sample_entities(10)) == [1, 2, 3, 4, 5, 6]
    # a later write is visible through the open read-only connection
    import feast  # noqa: F401  (already imported by _store)

    now = datetime.now(UTC) + timedelta(seconds=1)
    store.write_to_online_store(
        "profile",
        pd.DataFrame({"customer_id": [99], "event_timestamp": [now], "age": [77],
                      "plan": ["new"], "vip": [False]}),
    )
    _compare(reader, store, [99, 1])
    assert reader.get([99])[0]["age"] == 77
    reader.close()


def test_sqlite_reader_missing_store_is_a_clear_error(tmp_path):
    reader = online.OnlineReader(tmp_path / "nope.db", "p", VIEWS, "customer_id")
    with pytest.raises(online.OnlineStoreUnavailable, match="materialize"):
        reader.get([1])


@pytest.fixture(params=["hiredis", "stdlib"])
def redis_parser(request, monkeypatch):
    """The reader's two RESP parsers: hiredis (pinned in the serving env) and its own."""
    if request.param == "stdlib":
        monkeypatch.setattr(online_redis, "hiredis", None)
    else:
        assert online_redis.hiredis is not None, "hiredis is pinned in the runtime and serving locks"
    return request.param


def test_redis_reader_matches_feast(tmp_path, redis_parser):
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    project = f"t_online_{uuid.uuid4().hex[:8]}"
    store = _store(
        tmp_path, {"type": "redis", "connection_string": "127.0.0.1:6379"}, project
    )
    reader = online.OnlineReader("redis://127.0.0.1:6379/0", project, VIEWS, "customer_id")
    try:
        rows = _compare(reader, store, [1, 3, 5, 99, 2])
        assert rows[3] is None and rows[0]["age"] == 20
        assert sorted(reader.sample_entities(10)) == [1, 2, 3, 4, 5, 6]
        # an error reply (a non-hash at an entity's key) is a clear error, and the
        # connection does not stay out of step: the next lookup reads the right rows
        client.set(keys.serialize_entity_key("customer_id", 42) + project.encode(), b"x")
        with pytest.raises(online.OnlineStoreUnavailable, match="WRONGTYPE"):
            reader.get([1, 42, 3])
        again = reader.get([3, 1])
        assert again[0]["age"] == rows[1]["age"] and again[1]["age"] == rows[0]["age"]
    finally:
        reader.close()
        for key in client.scan_iter(match=b"*" + project.encode()):
            client.delete(key)


def test_struct_layout_of_a_key_is_documented_v3():
    key = keys.serialize_entity_key("id", 7)
    assert key[:4] == struct.pack("<I", 1)
    assert key.endswith(struct.pack("<IIq", 4, 8, 7))
