"""Reading Feast's ``SqliteOnlineStore``: one table ``<project>_<view>`` per view, one
row per ``(entity_key, feature_name)`` holding a serialized ``Value``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from airloop.serving.online.base import OnlineStoreUnavailable


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
