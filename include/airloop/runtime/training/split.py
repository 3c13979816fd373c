"""Time-based split of a training frame.

The most recent ``model.holdout_days`` calendar days (UTC) are the holdout; of the
rest, the latest ~20 % of rows (:data:`VALIDATION_SHARE`) validate the search and the
earlier rows train it. Every part must contain both label classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from airloop.core.errors import AirloopError

VALIDATION_SHARE = 0.2


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame
    holdout: pd.DataFrame

    def rows(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.valid), "holdout": len(self.holdout)}


def split_frame(frame: pd.DataFrame, spec) -> Split:
    """Time-based split of a training frame (see the module docstring).

    Raises :class:`AirloopError` when the frame is too short or a part lacks a class.
    """
    missing = [c for c in (spec.timestamp, spec.label, *spec.feature_columns) if c not in frame]
    if missing:
        raise AirloopError(f"training frame lacks column(s) {missing}")
    frame = frame.dropna(subset=[spec.label])
    ts = pd.to_datetime(frame[spec.timestamp], utc=True)
    frame = frame.assign(**{spec.timestamp: ts}).sort_values(spec.timestamp, kind="stable")
    days = ts.dt.floor("D")
    distinct = np.sort(days.unique())
    holdout_days = spec.model.holdout_days
    if len(distinct) <= holdout_days:
        raise AirloopError(
            f"training data spans {len(distinct)} day(s); model.holdout_days={holdout_days} "
            "needs at least one more day to train on"
        )
    cutoff = distinct[-holdout_days]
    holdout = frame[days.loc[frame.index] >= cutoff]
    rest = frame[days.loc[frame.index] < cutoff]
    n_valid = max(1, int(round(len(rest) * VALIDATION_SHARE)))
    train, valid = rest.iloc[:-n_valid], rest.iloc[-n_valid:]
    for name, part in (("train", train), ("validation", valid), ("holdout", holdout)):
        classes = set(part[spec.label].astype(int).unique())
        if classes != {0, 1}:
            raise AirloopError(
                f"{name} split has {len(part)} rows with label classes {sorted(classes)}; "
                f"both 0 and 1 are needed (label {spec.label!r})"
            )
    return Split(train.reset_index(drop=True), valid.reset_index(drop=True),
                 holdout.reset_index(drop=True))


def xy(part: pd.DataFrame, spec) -> tuple[pd.DataFrame, np.ndarray]:
    """(feature columns, 0/1 label array) of one part of a split."""
    return part[spec.feature_columns].reset_index(drop=True), part[spec.label].astype(int).to_numpy()
