"""Ground-truth labels by request id: validation shared by the endpoint and the CLI.

A label record is ``{"id": "<request id>", "row": 0, "label": 1}`` (``row`` defaults to
0); it is appended to the project's feedback log (:mod:`airloop.core.predlog`) with a ``ts``.
A batch is validated as a whole: one bad record rejects the batch, nothing is written.
Standard library only (imported by the model server and by ``airloop feedback``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airloop.core.errors import AirloopError
from airloop.core.predlog import JsonlLog

MAX_LABELS = 100_000


class BadFeedback(AirloopError):
    """A label batch that cannot be stored (the message names the offending record)."""


def _label(value: Any, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip() in {"0", "1", "0.0", "1.0"}:
        return int(float(value.strip()))
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    raise BadFeedback(f"{where}: label must be 0 or 1, got {value!r}")


def _row(value: Any, where: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise BadFeedback(f"{where}: row must be a non-negative integer, got {value!r}")
    try:
        row = int(value) if not isinstance(value, float) or value.is_integer() else -1
    except (TypeError, ValueError):
        row = -1
    if row < 0:
        raise BadFeedback(f"{where}: row must be a non-negative integer, got {value!r}")
    return row


def validate(labels: Any) -> list[dict[str, Any]]:
    """Normalized ``{"id", "row", "label"}`` records, or :class:`BadFeedback`."""
    if not isinstance(labels, list) or not labels:
        raise BadFeedback('expected {"labels": [{"id": ..., "row": 0, "label": 0|1}, ...]}')
    if len(labels) > MAX_LABELS:
        raise BadFeedback(f"at most {MAX_LABELS} labels per request, got {len(labels)}")
    out = []
    for i, item in enumerate(labels):
        where = f"labels[{i}]"
        if not isinstance(item, dict):
            raise BadFeedback(f"{where}: expected an object, got {type(item).__name__}")
        unknown = set(item) - {"id", "row", "label"}
        if unknown:
            raise BadFeedback(f"{where}: unknown field(s) {sorted(unknown)}")
        rid = item.get("id")
        if not isinstance(rid, str) or not rid.strip():
            raise BadFeedback(f"{where}: id must be a non-empty string (the request id)")
        if "label" not in item:
            raise BadFeedback(f"{where}: label is missing")
        out.append({"id": rid.strip(), "row": _row(item.get("row"), where),
                    "label": _label(item["label"], where)})
    return out


def parse_body(body: bytes | str) -> list[dict[str, Any]]:
    """Validate the JSON body of the feedback endpoint."""
    try:
        doc = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadFeedback(f"body is not JSON: {exc}") from None
    if isinstance(doc, dict) and "labels" in doc:
        return validate(doc["labels"])
    if isinstance(doc, list):
        return validate(doc)
    return validate(None)


def read_file(path: Path) -> list[dict[str, Any]]:
    """Labels from a CSV (header ``id,row,label``) or JSON Lines file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BadFeedback(f"{path}: cannot read ({exc.strerror})") from None
    items: list[Any] = []
    if path.suffix.lower() in {".jsonl", ".ndjson", ".json"}:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except ValueError as exc:
                raise BadFeedback(f"{path}:{n}: not JSON ({exc})") from None
    elif path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        missing = {"id", "label"} - set(reader.fieldnames or [])
        if missing:
            raise BadFeedback(f"{path}: CSV header lacks {sorted(missing)} (want id,row,label)")
        items = [
            {k: v for k, v in r.items() if k in {"id", "row", "label"}} for r in reader
        ]
    else:
        raise BadFeedback(f"{path}: use a .csv (id,row,label) or .jsonl file")
    try:
        return validate(items)
    except BadFeedback as exc:
        raise BadFeedback(f"{path}: {exc}") from None


def append(folder: Path, labels: Iterable[dict[str, Any]], log: JsonlLog | None = None) -> int:
    """Append validated labels to the feedback log; returns the number written."""
    now = datetime.now(UTC)
    ts = now.isoformat()
    log = log or JsonlLog(folder)
    return log.append(({**r, "ts": ts} for r in labels), when=now)
