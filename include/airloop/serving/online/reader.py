"""The online reader: features by entity id from Feast's SQLite or Redis online store."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from airloop.core.errors import AirloopError
from airloop.serving.online.keys import (
    deserialize_entity_key,
    entity_value_type,
    serialize_entity_key,
)
from airloop.serving.online.redis import _RedisBackend
from airloop.serving.online.sqlite import _SqliteBackend
from airloop.serving.online.values import decode_value


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
