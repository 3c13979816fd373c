"""The prediction log's two encoders (orjson where installed, else json) write the same
records, and ``read_window`` reads them back (what the monitor joins with feedback)."""

from __future__ import annotations

import importlib
import json
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

RECORD = {"id": "req-é-1", "row": 0, "ts": "2026-11-27T00:00:00.123456+00:00",
          "model": "demo-churn", "version": "3", "entity": 1042,
          "features": {"a": 1, "b": 2.5, "c": "month-to-month", "d": None, "e": True},
          "score": 0.8312, "prediction": 1}


@pytest.fixture(params=["orjson", "json"])
def predlog(request, monkeypatch):
    import airloop.core.predlog as module

    if request.param == "json":
        monkeypatch.setitem(sys.modules, "orjson", None)  # import orjson -> ImportError
    module = importlib.reload(module)
    assert (module.orjson is None) == (request.param == "json")
    yield module
    monkeypatch.undo()
    importlib.reload(module)


def test_both_encoders_write_the_same_records(predlog, tmp_path):
    when = datetime(2026, 11, 27, 12, tzinfo=UTC)
    log = predlog.JsonlLog(tmp_path)
    second = {**RECORD, "row": 1, "score": np.float64(0.25), "entity": np.int64(7)}
    assert log.append([RECORD, second], when) == 2
    lines = (tmp_path / "2026-11-27.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        RECORD, {**RECORD, "row": 1, "score": 0.25, "entity": 7}]
    assert lines[0].startswith('{"id":"req-')  # compact, id first: KnownIds.warm relies on it
    back = list(predlog.read_window(tmp_path, when - timedelta(days=1), when + timedelta(days=1)))
    assert [r["row"] for r in back] == [0, 1]


def test_empty_batch_writes_nothing(predlog, tmp_path):
    assert predlog.JsonlLog(tmp_path).append([]) == 0
    assert not list(tmp_path.iterdir())
