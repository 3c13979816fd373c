"""A fast, dependency-light reader of Feast's online store, for the model server.

Feast itself cannot be installed next to MLServer (conflicting pins), so the model
server reads what Feast's online stores write, directly:

* **SQLite** (``SqliteOnlineStore``): one table ``<project>_<view>`` per feature view,
  one row per ``(entity_key, feature_name)`` with the value as a serialized
  ``feast.types.Value`` protobuf.
* **Redis** (``RedisOnlineStore``): one hash per entity at
  ``serialize_entity_key(key) + project``; fields ``murmur3_32("<view>:<feature>")``
  hold serialized ``Value`` protobufs, ``_ts:<view>`` the write timestamp.

Entity keys use Feast's serialization **version 3**; values are decoded with a tiny
protobuf wire-format decoder for the scalar types (no generated classes needed).
Standard library only; for Redis replies the ``hiredis`` C parser is used when it is
installed (the serving environment pins it), the built-in RESP parser otherwise.

:class:`OnlineReader` keeps one read-only connection open; one lookup is a single
SQL statement (or one ``HMGET``) for all views.
"""

from __future__ import annotations

import socket
import sqlite3
import struct
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from airloop.errors import AirloopError

try:  # optional C parser for Redis replies
    import hiredis
except ImportError:  # pragma: no cover - depends on the environment
    hiredis = None

# feast.types.ValueType numbers used in entity keys.
VT_BYTES, VT_STRING, VT_INT32, VT_INT64 = 1, 2, 3, 4

_ENTITY_DTYPES = {
    "int64": VT_INT64,
    "int": VT_INT64,
    "int32": VT_INT32,
    "string": VT_STRING,
    "str": VT_STRING,
    "bytes": VT_BYTES,
}


class OnlineStoreUnavailable(AirloopError):
    """The online store (file, table or server) is not there or cannot be read."""


# -- entity keys ---------------------------------------------------------------------


def entity_value_type(dtype: str) -> int:
    try:
        return _ENTITY_DTYPES[dtype.lower()]
    except KeyError:
        raise AirloopError(
            f"unsupported entity dtype {dtype!r} (use one of {sorted(_ENTITY_DTYPES)})"
        ) from None


def coerce_entity(value: Any, dtype: str) -> Any:
    """``value`` as the Python type of the entity dtype; ValueError if impossible."""
    vt = entity_value_type(dtype)
    if vt in (VT_INT64, VT_INT32):
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not an integer entity id")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{value!r} is not an integer entity id")
            value = int(value)
        elif isinstance(value, (bytes, str)):
            text = value.decode() if isinstance(value, bytes) else value
            try:
                value = int(text.strip())
            except ValueError:
                raise ValueError(f"{text!r} is not an integer entity id") from None
        elif not isinstance(value, int):
            # numpy integers and the like
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"{value!r} is not an integer entity id") from None
        bits = 63 if vt == VT_INT64 else 31
        if not -(1 << bits) <= value < (1 << bits):
            raise ValueError(f"{value} is out of range for entity dtype {dtype}")
        return int(value)
    if vt == VT_STRING:
        return value.decode() if isinstance(value, bytes) else str(value)
    return value if isinstance(value, bytes) else str(value).encode()


def serialize_entity_key(join_key: str, value: Any, dtype: str = "int64") -> bytes:
    """Feast's ``serialize_entity_key`` (version 3) for a single join key."""
    vt = entity_value_type(dtype)
    value = coerce_entity(value, dtype)
    if vt == VT_INT64:
        val = struct.pack("<q", value)
    elif vt == VT_INT32:
        val = struct.pack("<i", value)
    elif vt == VT_STRING:
        val = value.encode("utf8")
    else:
        val = value
    key = join_key.encode("utf8")
    return b"".join(
        (
            struct.pack("<I", 1),
            struct.pack("<II", VT_STRING, len(key)),
            key,
            struct.pack("<II", vt, len(val)),
            val,
        )
    )


def deserialize_entity_key(blob: bytes) -> dict[str, Any]:
    """The join keys and values of a version-3 serialized entity key."""
    (n,) = struct.unpack_from("<I", blob, 0)
    offset = 4
    keys = []
    for _ in range(n):
        _, length = struct.unpack_from("<II", blob, offset)
        offset += 8
        keys.append(blob[offset : offset + length].decode("utf8"))
        offset += length
    values: list[Any] = []
    for _ in range(n):
        vt, length = struct.unpack_from("<II", blob, offset)
        offset += 8
        raw = blob[offset : offset + length]
        offset += length
        if vt == VT_INT64:
            values.append(struct.unpack("<q", raw)[0])
        elif vt == VT_INT32:
            values.append(struct.unpack("<i", raw)[0])
        elif vt == VT_STRING:
            values.append(raw.decode("utf8"))
        else:
            values.append(raw)
    return dict(zip(keys, values))


# -- feast.types.Value decoding (protobuf wire format) ----------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


# field number -> how to read it (all scalar members of the Value oneof)
_STRING_FIELDS = {2: "string", 32: "json", 36: "uuid", 37: "time_uuid", 44: "decimal"}


_DOUBLE = struct.Struct("<d").unpack_from
_TAG_DOUBLE, _TAG_INT64, _TAG_STRING = 0x29, 0x20, 0x12  # fields 5 (fixed64), 4, 2


def decode_value(buf: bytes | None) -> Any:
    """Decode a serialized ``feast.types.Value`` holding a scalar (None if unset/null).

    The three shapes Feast writes for a view's features almost always are decoded
    without the general loop: a double (tag + 8 bytes), a small non-negative int64
    (tag + one varint byte) and a short string (tag + one length byte); a 100-entity
    lookup decodes ~1,200 values, so this is most of the reader's CPU time."""
    if not buf:
        return None
    n, tag = len(buf), buf[0]
    if tag == _TAG_DOUBLE and n == 9:
        return _DOUBLE(buf, 1)[0]
    if tag == _TAG_INT64 and n == 2 and buf[1] < 0x80:
        return buf[1]
    if tag == _TAG_STRING and n >= 2 and buf[1] < 0x80 and n == 2 + buf[1]:
        return buf[2:].decode("utf8")
    return _decode_general(buf)


def _decode_general(buf: bytes) -> Any:
    pos, out = 0, None
    end = len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            raw, pos = _varint(buf, pos)
            if field == 3:
                out = _signed(raw, 32)
            elif field == 4:
                out = _signed(raw, 64)
            elif field == 7:
                out = bool(raw)
            elif field == 8:
                out = datetime.fromtimestamp(_signed(raw, 64), tz=UTC)
            elif field == 19:
                out = None
            else:
                raise ValueError(f"unsupported feast Value field {field} (varint)")
        elif wire == 1:
            (out,) = struct.unpack_from("<d", buf, pos)
            pos += 8
            if field != 5:
                raise ValueError(f"unsupported feast Value field {field} (fixed64)")
        elif wire == 5:
            (out,) = struct.unpack_from("<f", buf, pos)
            pos += 4
            if field != 6:
                raise ValueError(f"unsupported feast Value field {field} (fixed32)")
        elif wire == 2:
            length, pos = _varint(buf, pos)
            raw = buf[pos : pos + length]
            pos += length
            if field == 1:
                out = bytes(raw)
            elif field in _STRING_FIELDS:
                out = raw.decode("utf8")
            else:
                raise ValueError(
                    f"unsupported feast Value field {field}: only scalar features are served"
                )
        else:
            raise ValueError(f"malformed feast Value (wire type {wire})")
    return out


# -- murmur3 (Feast's Redis field names) ---------------------------------------------


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit, unsigned (what ``mmh3.hash(key, signed=False)`` returns)."""
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed & mask
    n = len(data) // 4
    for i in range(n):
        (k,) = struct.unpack_from("<I", data, i * 4)
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    tail = data[n * 4 :]
    k = 0
    if len(tail) >= 3:
        k ^= tail[2] << 16
    if len(tail) >= 2:
        k ^= tail[1] << 8
    if tail:
        k ^= tail[0]
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    return h


def redis_field(view: str, feature: str) -> bytes:
    """Feast's Redis hash field for a feature: murmur3_32 of ``view:feature``, LE bytes."""
    return struct.pack("<I", murmur3_32(f"{view}:{feature}".encode("utf8")))


# -- backends ------------------------------------------------------------------------


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _SqliteBackend:
    def __init__(self, path: Path, project: str, views: dict[str, list[str]]):
        self.path = Path(path)
        self.tables = {view: f"{project}_{view}" for view in views}
        self._conn: sqlite3.Connection | None = None
        self._present: set[str] = set()
        self._sql: str | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self.path.is_file():
                raise OnlineStoreUnavailable(
                    f"online store {self.path} does not exist (materialize features first)"
                )
            # Read-only: the model server must never lock or change Feast's store.
            self._conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, check_same_thread=False
            )
        return self._conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        if self._sql is not None and len(self._present) == len(self.tables):
            return
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        present = {v for v, t in self.tables.items() if t in names}
        if present == self._present and self._sql is not None:
            return
        self._present = present
        parts = [
            f"SELECT {i}, entity_key, feature_name, value FROM {_quote(t)} "
            f"WHERE entity_key IN ({{marks}})"
            for i, (v, t) in enumerate(self.tables.items())
            if v in present
        ]
        self._sql = " UNION ALL ".join(parts)

    def read(self, keys: list[bytes]) -> list[dict[str, dict[str, bytes]]]:
        """Per key: {view: {feature: value bytes}}."""
        conn = self._connect()
        try:
            self._prepare(conn)
            out: list[dict[str, dict[str, bytes]]] = [{} for _ in keys]
            if not self._sql:
                return out
            marks = ",".join("?" * len(keys))
            sql = self._sql.format(marks=marks)
            index = {k: i for i, k in enumerate(keys)}
            views = list(self.tables)
            rows = conn.execute(sql, keys * len(self._present)).fetchall()
        except sqlite3.DatabaseError as exc:
            # A store replaced underneath us (fresh `feast apply`): reopen next time.
            self.close()
            raise OnlineStoreUnavailable(f"cannot read online store {self.path}: {exc}") from exc
        for view_i, key, feature, value in rows:
            out[index[key]].setdefault(views[view_i], {})[feature] = value
        return out

    def sample_keys(self, limit: int) -> list[bytes]:
        conn = self._connect()
        self._prepare(conn)
        for view in self.tables:
            if view in self._present:
                rows = conn.execute(
                    f"SELECT DISTINCT entity_key FROM {_quote(self.tables[view])} LIMIT ?",
                    (limit,),
                ).fetchall()
                if rows:
                    return [r[0] for r in rows]
        return []

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._sql, self._present = None, None, set()


class _Resp:
    """A minimal RESP2 client (HMGET, SCAN, AUTH, SELECT) over one socket."""

    def __init__(self, host: str, port: int, db: int, password: str | None, timeout: float):
        self.addr, self.db, self.password, self.timeout = (host, port), db, password, timeout
        self._sock: socket.socket | None = None
        self._buf, self._pos = b"", 0

    def _open(self) -> None:
        try:
            self._sock = socket.create_connection(self.addr, timeout=self.timeout)
        except OSError as exc:
            raise OnlineStoreUnavailable(f"cannot connect to Redis {self.addr}: {exc}") from exc
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf, self._pos = b"", 0
        if self.password:
            self._call(b"AUTH", self.password.encode())
        if self.db:
            self._call(b"SELECT", str(self.db).encode())

    # Replies are parsed in place: ``_pos`` walks the receive buffer, which is only
    # re-sliced when more bytes arrive (a 100-entity HMGET pipeline is ~1,500 lines;
    # slicing the rest of the buffer per line made parsing quadratic).
    def _recv(self) -> bytes:
        chunk = self._sock.recv(262144)
        if not chunk:
            raise ConnectionError("Redis closed the connection")
        return chunk

    def _more(self) -> None:
        self._buf = self._buf[self._pos:] + self._recv()
        self._pos = 0

    def _line(self) -> bytes:
        while True:
            end = self._buf.find(b"\r\n", self._pos)
            if end >= 0:
                line = self._buf[self._pos:end]
                self._pos = end + 2
                return line
            self._more()

    def _exact(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n + 2:
            self._more()
        data = self._buf[self._pos:self._pos + n]
        self._pos += n + 2
        return data

    def _reply(self) -> Any:
        line = self._line()
        kind = line[:1]
        if kind == b"$":
            n = int(line[1:])
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(line[1:])
            return None if n < 0 else [self._reply() for _ in range(n)]
        if kind == b"+":
            return line[1:]
        if kind == b"-":
            raise OnlineStoreUnavailable(f"Redis error: {line[1:].decode(errors='replace')}")
        if kind == b":":
            return int(line[1:])
        raise ConnectionError(f"unexpected Redis reply {line[:40]!r}")

    def _call(self, *args: bytes) -> Any:
        cmd = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        self._sock.sendall(cmd)
        return self._reply()

    def _pipeline(self, commands: list[tuple[bytes, ...]]) -> list[Any]:
        """Send every command in one write, then read the replies in order."""
        self._sock.sendall(b"".join(
            b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
            for args in commands
        ))
        if hiredis is not None and self._pos == len(self._buf):
            return self._pipeline_hiredis(len(commands))
        return [self._reply() for _ in commands]

    def _pipeline_hiredis(self, count: int) -> list[Any]:
        reader = hiredis.Reader()
        replies: list[Any] = []
        while len(replies) < count:
            reply = reader.gets()
            if reply is False:  # needs more bytes
                reader.feed(self._recv())
                continue
            if isinstance(reply, hiredis.ReplyError):
                raise OnlineStoreUnavailable(f"Redis error: {reply}")
            replies.append(reply)
        if reader.gets() is not False:  # more than asked for: the stream is out of step
            raise ConnectionError("unexpected extra Redis reply")
        return replies

    def call(self, *args: bytes) -> Any:
        return self.call_many([args])[0]

    def call_many(self, commands: list[tuple[bytes, ...]]) -> list[Any]:
        """Pipelined commands (one round trip), reconnecting once on a broken socket."""
        for attempt in (0, 1):
            try:
                if self._sock is None:
                    self._open()
                return self._pipeline(commands)
            except (ConnectionError, TimeoutError, OSError) as exc:
                self.close()
                if attempt:
                    raise OnlineStoreUnavailable(f"Redis {self.addr}: {exc}") from exc
            except OnlineStoreUnavailable:
                # an error reply: later replies of this pipeline may still be unread,
                # so the connection is out of step; the next call opens a new one
                self.close()
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None


class _RedisBackend:
    def __init__(self, url: str, project: str, views: dict[str, list[str]], timeout: float):
        u = urlparse(url)
        db = int(u.path.strip("/") or 0) if u.path.strip("/").isdigit() else 0
        password = unquote(u.password) if u.password else None
        self.client = _Resp(u.hostname or "127.0.0.1", u.port or 6379, db, password, timeout)
        self.project = project.encode("utf8")
        self.fields: list[tuple[str, str, bytes]] = [
            (view, feature, redis_field(view, feature))
            for view, features in views.items()
            for feature in features
        ]
        self.ts_fields = [f"_ts:{view}".encode("utf8") for view in views]
        self.views = list(views)

    def read(self, keys: list[bytes]) -> list[dict[str, dict[str, bytes]]]:
        args = [f for _, _, f in self.fields] + self.ts_fields
        out: list[dict[str, dict[str, bytes]]] = []
        replies = self.client.call_many([(b"HMGET", key + self.project, *args) for key in keys])
        for values in replies:
            row: dict[str, dict[str, bytes]] = {}
            written = {
                self.views[i] for i, ts in enumerate(values[len(self.fields) :]) if ts is not None
            }
            for (view, feature, _), value in zip(self.fields, values):
                if view in written or value is not None:
                    row.setdefault(view, {})[feature] = value
            out.append(row)
        return out

    def sample_keys(self, limit: int) -> list[bytes]:
        cursor, found = b"0", []
        pattern = b"*" + self.project
        while True:
            cursor, keys = self.client.call(b"SCAN", cursor, b"MATCH", pattern, b"COUNT", b"500")
            found.extend(k[: -len(self.project)] for k in keys)
            if len(found) >= limit or cursor == b"0":
                return found[:limit]

    def close(self) -> None:
        self.client.close()


# -- the reader ----------------------------------------------------------------------


class OnlineReader:
    """Online features by entity id, read straight from Feast's online store.

    ``path_or_url`` is the SQLite file of a ``SqliteOnlineStore`` or a
    ``redis://[:password@]host:port[/db]`` URL of a ``RedisOnlineStore``; ``project`` is the
    Feast project; ``views`` maps each feature view to the features to read.
    :meth:`get` returns, per entity id, ``{feature: value}`` over all views (``None`` for
    a feature the store lacks) or ``None`` when no view has the entity.
    Thread-safe; the connection is opened on first use and kept.
    """

    def __init__(
        self,
        path_or_url: str | Path,
        project: str,
        views: dict[str, Sequence[str]],
        join_key: str,
        dtype: str = "int64",
        timeout: float = 2.0,
    ):
        entity_value_type(dtype)  # fail early on an unknown dtype
        self.project, self.join_key, self.dtype = project, join_key, dtype
        self.views = {view: list(features) for view, features in views.items()}
        self.features = [f for fs in self.views.values() for f in fs]
        location = str(path_or_url)
        self.location = location
        if location.startswith(("redis://", "rediss://")):
            if location.startswith("rediss://"):
                raise AirloopError("rediss:// (TLS) is not supported by the online reader")
            self._backend: Any = _RedisBackend(location, project, self.views, timeout)
        else:
            if location.startswith("sqlite:///"):
                location = location[len("sqlite:///") - 1 :]
            self._backend = _SqliteBackend(Path(location), project, self.views)
        self._lock = threading.Lock()

    def key(self, entity: Any) -> bytes:
        return serialize_entity_key(self.join_key, entity, self.dtype)

    def get(self, entity_ids: Iterable[Any]) -> list[dict[str, Any] | None]:
        """Features per entity id, in order; ``None`` for an entity the store lacks.

        Raises ``ValueError`` for an id that does not fit the entity dtype and
        :class:`OnlineStoreUnavailable` when the store cannot be read.
        """
        keys = [self.key(e) for e in entity_ids]
        if not keys:
            return []
        unique = list(dict.fromkeys(keys))
        with self._lock:
            raw = self._backend.read(unique)
        by_key = dict(zip(unique, raw))
        out: list[dict[str, Any] | None] = []
        for key in keys:
            per_view = by_key[key]
            if not per_view:
                out.append(None)
                continue
            row: dict[str, Any] = {}
            for view, features in self.views.items():
                values = per_view.get(view, {})
                for feature in features:
                    row[feature] = decode_value(values.get(feature))
            out.append(row)
        return out

    def sample_entities(self, limit: int = 1) -> list[Any]:
        """Up to ``limit`` entity ids present in the store (for smoke requests)."""
        with self._lock:
            keys = self._backend.sample_keys(limit)
        return [deserialize_entity_key(k).get(self.join_key) for k in keys]

    def close(self) -> None:
        with self._lock:
            self._backend.close()

    def __enter__(self) -> OnlineReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
