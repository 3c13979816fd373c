"""Deterministic synthetic data for the benchmarks (no downloads).

Frames follow the demo project's columns (``include/projects/churn.yaml``) so the
same model, feature views and drift policy apply; values are drawn per column from
its declared range or allowed values.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from benchmarks.common import REPO


def spec():
    from airloop.core.spec import load_spec

    return load_spec("churn", REPO / "include" / "projects")


def churn_frame(n: int, seed: int = 0, entities: int | None = None,
                start: datetime | None = None) -> pd.DataFrame:
    """``n`` rows: entity key, event timestamp, every spec column, and the label."""
    s = spec()
    rng = np.random.default_rng(seed)
    out: dict[str, object] = {}
    ids = np.arange(1, n + 1) if entities is None else rng.integers(1, entities + 1, n)
    out[s.entity_key] = ids.astype("int64")
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    out[s.timestamp] = [start + timedelta(seconds=int(x)) for x in rng.integers(0, 86400, n)]
    for c in s.columns:
        if c.allowed:
            out[c.name] = rng.choice(list(c.allowed), n)
        elif c.dtype.startswith("int"):
            hi = min(c.max if c.max is not None else 100, (c.min or 0) + 60)
            out[c.name] = rng.integers(int(c.min or 0), int(hi) + 1, n).astype("int64")
        else:
            lo, hi = float(c.min or 0.0), float(c.max if c.max is not None else 1.0)
            out[c.name] = np.round(lo + (hi - lo) * rng.beta(2.0, 5.0, n), 4)
    frame = pd.DataFrame(out)
    num = [c.name for c in s.columns if not c.allowed]
    z = sum((frame[c] - frame[c].mean()) / (frame[c].std() + 1e-9) * w
            for c, w in zip(num, np.linspace(-1.0, 1.0, len(num))))
    p = 1.0 / (1.0 + np.exp(-(z + rng.normal(0, 1.0, n))))
    frame[s.label] = (p > 0.5).astype("int64")
    return frame


def numeric_matrix(rows: int, cols: int, seed: int, shift: dict[int, float] | None = None):
    """A ``rows`` x ``cols`` float frame (mixed distributions); ``shift`` adds a mean
    shift in standard deviations to the given column indices (the injected drift)."""
    rng = np.random.default_rng(seed)
    data = {}
    for j in range(cols):
        kind = j % 4
        if kind == 0:
            x = rng.normal(0, 1, rows)
        elif kind == 1:
            x = rng.lognormal(0, 0.5, rows)
        elif kind == 2:
            x = rng.gamma(2.0, 2.0, rows)
        else:
            x = rng.uniform(0, 10, rows)
        if shift and j in shift:
            x = x + shift[j] * x.std()
        data[f"f{j:02d}"] = x
    return pd.DataFrame(data)
