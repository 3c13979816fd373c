"""Reading Feast's ``RedisOnlineStore``: one hash per entity at
``serialize_entity_key(key) + project``; fields ``murmur3_32("<view>:<feature>")`` hold
serialized ``Value`` protobufs. Replies are parsed by ``hiredis`` when it is installed
(the serving environment pins it), by the built-in RESP parser otherwise."""

from __future__ import annotations

import socket
import struct
from typing import Any
from urllib.parse import unquote, urlparse

from airloop.serving.online.base import OnlineStoreUnavailable

try:  # optional C parser for Redis replies
    import hiredis
except ImportError:  # pragma: no cover - depends on the environment
    hiredis = None

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
