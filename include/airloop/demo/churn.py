"""Deterministic synthetic churn data for the demo project (no downloads).

A fixed pool of subscribers with stable profiles is observed in daily batches: each row
is one subscriber's snapshot on that day (usage, billing, service experience) and the
label says whether they churned within 30 days. The label is drawn from a logistic
model of the features, so a good model reaches a ROC AUC around 0.8.

From ``drift_from_day`` on, two things change, as they do when a competitor launches
an aggressive offer:

* **covariate drift** — prices go up, satisfaction goes down, contracts shift to
  month-to-month, usage and dropped calls rise, support calls increase;
* **concept drift** — churn now follows heavy data usage and wallet payments, and
  satisfaction and tenure protect much less: a model fitted before the change loses
  several AUC points on drifted data, and a retrained one recovers.

Everything is a pure function of ``(seed, day)``: the same call gives the same frame.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

POOL_SIZE = 5000
CONTRACTS = ("month-to-month", "one-year", "two-year")
PAYMENTS = ("card", "bank", "cheque", "wallet")


def _pool(seed: int) -> dict[str, np.ndarray]:
    """Stable per-customer attributes (id = index + 1)."""
    rng = np.random.default_rng([seed, 0xC0FFEE])
    n = POOL_SIZE
    return {
        "customer_id": np.arange(1, n + 1, dtype=np.int64),
        "tenure0": rng.integers(0, 72, n),
        "age": np.clip(rng.normal(44, 14, n), 18, 90).astype(np.int64),
        "contract": rng.choice(3, n, p=[0.5, 0.3, 0.2]),
        "payment": rng.choice(4, n, p=[0.4, 0.3, 0.15, 0.15]),
        "devices": rng.integers(1, 7, n),
        "usage_base": rng.gamma(2.0, 12.0, n),
        "temper": rng.normal(0, 1, n),  # unobserved: makes labels noisy
    }


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def generate_day(
    spec,
    day: int,
    *,
    start: date,
    rows: int,
    drift_from_day: int | None = None,
    seed: int = 7,
) -> pd.DataFrame:
    """One day's batch: ``rows`` subscriber snapshots with label, in spec column order."""
    if rows < 1:
        raise ValueError("rows must be >= 1")
    pool = _pool(seed)
    rng = np.random.default_rng([seed, day, 1])
    drifted = drift_from_day is not None and day >= drift_from_day
    idx = rng.choice(POOL_SIZE, size=rows, replace=rows > POOL_SIZE)

    tenure = np.clip(pool["tenure0"][idx] + day // 30, 0, 120).astype(np.int64)
    contract = pool["contract"][idx].copy()
    if drifted:  # contracts shift to month-to-month
        switch = rng.random(rows) < 0.45
        contract[switch] = 0
    payment = pool["payment"][idx]
    devices = pool["devices"][idx].astype(np.int64)
    usage = pool["usage_base"][idx] * rng.lognormal(0, 0.25, rows) * (1.8 if drifted else 1.0)
    dropped = rng.beta(2, 40, rows) * (2.2 if drifted else 1.0)
    monthly = 18 + 11 * devices + 0.35 * usage + rng.normal(0, 6, rows)
    monthly = monthly * (1.35 if drifted else 1.0)
    total = monthly * np.maximum(tenure, 1) * rng.uniform(0.9, 1.05, rows)
    satisfaction = rng.normal(7.2, 1.4, rows) - 25 * dropped + 0.3 * pool["temper"][idx]
    if drifted:
        satisfaction -= 1.6
    support = rng.poisson(0.8 + 1.8 * (satisfaction < 5) + (1.5 if drifted else 0.0))
    late = rng.poisson(0.25 + 0.6 * (payment == 2) + 0.4 * (contract == 0))

    if not drifted:
        logit = (
            -1.2
            + 1.3 * (contract == 0)
            - 0.6 * (contract == 2)
            - 0.035 * tenure
            + 0.018 * (monthly - 70)
            + 0.32 * support
            + 0.45 * late
            - 0.42 * (satisfaction - 7)
            + 6.0 * dropped
            + 0.5 * pool["temper"][idx]
        )
    else:  # a competitor's data-heavy offer: different people leave, for other reasons
        logit = (
            -1.7
            + 0.4 * (contract == 0)
            - 0.005 * tenure
            + 0.05 * (usage - 40)
            + 2.2 * (payment == 3)
            + 0.8 * (devices >= 4)
            + 0.05 * support
            - 0.05 * (satisfaction - 7)
            + 0.3 * pool["temper"][idx]
        )
    churned = (rng.random(rows) < _sigmoid(logit)).astype(np.int64)

    day_start = datetime.combine(start, datetime.min.time(), tzinfo=UTC) + timedelta(days=day)
    offsets = np.sort(rng.integers(0, 86_400, rows))
    frame = pd.DataFrame(
        {
            "customer_id": pool["customer_id"][idx],
            "event_timestamp": pd.to_datetime(
                [day_start + timedelta(seconds=int(s)) for s in offsets], utc=True
            ),
            "tenure_months": tenure,
            "age": pool["age"][idx],
            "contract_type": np.asarray(CONTRACTS, dtype=object)[contract],
            "payment_method": np.asarray(PAYMENTS, dtype=object)[payment],
            "monthly_charges": np.round(np.clip(monthly, 0, 500), 2),
            "total_charges": np.round(np.clip(total, 0, 60_000), 2),
            "data_usage_gb": np.round(np.clip(usage, 0, 2000), 3),
            "support_calls_30d": np.clip(support, 0, 100).astype(np.int64),
            "late_payments_90d": np.clip(late, 0, 30).astype(np.int64),
            "dropped_calls_rate": np.round(np.clip(dropped, 0, 1), 4),
            "num_devices": devices,
            "satisfaction_score": np.round(np.clip(satisfaction, 0, 10), 2),
            "churned": churned,
        }
    )
    # The spec decides names and order; the generator must agree with it.
    columns = [spec.entity_key, spec.timestamp, *[c.name for c in spec.columns], spec.label]
    missing = set(columns) - set(frame.columns)
    if missing:
        raise ValueError(f"spec {spec.name!r} wants columns the churn generator lacks: {missing}")
    return frame[columns]


def traffic(
    spec,
    day: int,
    n: int,
    *,
    start: date,
    drift_from_day: int | None = None,
    seed: int = 11,
) -> tuple[pd.DataFrame, pd.Series]:
    """Request traffic for one day: (entity key + features, ground-truth labels)."""
    frame = generate_day(
        spec, day, start=start, rows=n, drift_from_day=drift_from_day, seed=seed
    )
    features = frame[[spec.entity_key, *spec.feature_columns]].reset_index(drop=True)
    return features, frame[spec.label].reset_index(drop=True)


def corrupt_batch(spec, *, start: date, seed: int = 7) -> pd.DataFrame:
    """A deliberately bad batch: out-of-range values, a bad category, a missing column."""
    frame = generate_day(spec, 0, start=start, rows=60, seed=seed).copy()
    frame.loc[:4, "age"] = 250
    frame.loc[5:7, "contract_type"] = "lifetime"
    frame.loc[8:9, spec.label] = 3
    return frame.drop(columns=["satisfaction_score"])
