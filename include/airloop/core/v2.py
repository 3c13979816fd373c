"""Open Inference Protocol (V2) requests, built in one place for every caller.

The deploy step's smoke request, ``airloop predict``, the demo's traffic, the tests and
the benchmarks all send one input per column: ``{"name", "shape": [n], "datatype",
"data"}``. Values may be Python or numpy scalars (anything with ``.item()``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) and not isinstance(value, (str, bytes)) else value


def datatype(values: Sequence[Any]) -> str:
    """The V2 datatype of a column: BOOL, INT64, FP64, else BYTES (strings)."""
    if values and all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) or v is None for v in values):
        return "FP64"
    return "BYTES"


def v2_input(name: str, values: Iterable[Any]) -> dict[str, Any]:
    """One V2 input tensor for a column of values."""
    data = [_plain(v) for v in values]
    dtype = datatype(data)
    if dtype == "BYTES":
        data = [v if isinstance(v, str) else str(v) for v in data]
    return {"name": name, "shape": [len(data)], "datatype": dtype, "data": data}


def v2_request(columns: Mapping[str, Iterable[Any]], request_id: str | None = None,
               **extra: Any) -> dict[str, Any]:
    """A V2 inference request with one input per column (``extra`` adds top-level keys,
    e.g. ``parameters``)."""
    body: dict[str, Any] = {"inputs": [v2_input(n, vs) for n, vs in columns.items()], **extra}
    if request_id is not None:
        body = {"id": request_id, **body}
    return body


def records_to_columns(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """``[{col: value}, ...]`` as ``{col: [values]}`` (columns in first-seen order)."""
    names = list(dict.fromkeys(k for r in records for k in r))
    return {n: [r.get(n) for r in records] for n in names}


def frame_columns(frame) -> dict[str, list[Any]]:
    """A pandas DataFrame as ``{column: [Python values]}`` (no pandas import here)."""
    return {str(c): frame[c].tolist() for c in frame.columns}
