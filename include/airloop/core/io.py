"""Small I/O primitives every plane uses: atomic files and JSON over HTTP.

* :func:`atomic_write` / :func:`atomic_path` — a reader sees the old file or the new
  one, never half of it (temporary file in the same folder, then ``os.replace``).
* :func:`http_json` — one JSON request with the standard library (the serving image and
  the control plane share it, so it has no dependency); the status and the parsed body
  come back, and only an unreachable server raises.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from airloop.core.errors import AirloopError


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path next to ``path`` that replaces it when the block succeeds.

    For writers that want a file name (``DataFrame.to_parquet``); the temporary file is
    a dotfile (ignored by the landing-zone scan) and is removed when the block fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, data: str | bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically; ``mode`` sets the permissions before the
    file becomes visible (e.g. ``0o600`` for secrets)."""
    with atomic_path(path) as tmp:
        # 0o666 is narrowed by the umask, as open() would; an explicit mode is exact.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        if mode is not None:
            os.chmod(tmp, mode)
    return Path(path)


def write_json(path: Path, doc: Any, mode: int | None = None) -> Path:
    """``doc`` as indented, key-sorted JSON, atomically."""
    return atomic_write(path, json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n", mode)


def http_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    timeout: float = 30.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """Send ``body`` as JSON; return ``(status, parsed body)`` for every HTTP answer.

    A body that is not JSON comes back as text (``None`` when empty). An unreachable
    server raises :class:`AirloopError` naming the URL.
    """
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    req.add_header("Accept", "application/json")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read() or b""
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AirloopError(f"{url} is unreachable: {reason}") from None
    text = raw.decode(errors="replace")
    if not text.strip():
        return status, None
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def error_detail(answer: Any) -> str:
    """The human part of an error body (``error``/``detail``/``message`` or the text)."""
    if isinstance(answer, dict):
        for key in ("error", "detail", "message"):
            if answer.get(key):
                return str(answer[key])
    return str(answer)[:500]
