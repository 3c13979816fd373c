"""The prediction log and the feedback log: the join between serving and monitoring.

Both are append-only JSON Lines files, one per UTC day, under the project's folder
(:mod:`airloop.layout`). Serving appends one record per predicted row; the feedback
endpoint (or ``airloop feedback``) appends ground truth by request id. The monitor
reads a time window of both and joins them on ``(id, row)``.

Prediction record::

    {"id": "<request id>", "row": 0, "ts": "2026-11-27T00:00:00.123456+00:00",
     "model": "demo-churn", "version": "3", "entity": 1042,
     "features": {...}, "score": 0.83, "prediction": 1}

Feedback record::

    {"id": "<request id>", "row": 0, "ts": "...", "label": 1}

Standard library only: this module is imported by the model server.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def _day_file(folder: Path, when: datetime) -> Path:
    return folder / f"{when.strftime('%Y-%m-%d')}.jsonl"


class JsonlLog:
    """Thread-safe appender to day-partitioned JSONL files (one write per batch)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._lock = threading.Lock()

    def append(self, records: Iterable[dict[str, Any]], when: datetime | None = None) -> int:
        when = when or datetime.now(UTC)
        lines = "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in records)
        if not lines:
            return 0
        path = _day_file(self.folder, when)
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            # O_APPEND writes of one buffer are atomic enough for concurrent workers.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                os.write(fd, lines.encode())
            finally:
                os.close(fd)
        return lines.count("\n")


def read_window(folder: Path, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
    """Records with ``start <= ts < end`` (skips torn or malformed lines)."""
    folder = Path(folder)
    day = start.date()
    while day <= end.date():
        path = folder / f"{day.isoformat()}.jsonl"
        if path.is_file():
            with path.open() as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                        ts = datetime.fromisoformat(rec["ts"])
                    except (ValueError, KeyError, TypeError):
                        continue
                    if start <= ts < end:
                        yield rec
        day += timedelta(days=1)
