"""Comparison 4: the demo's search with ASHA vs every trial run to completion.

airloop's train-step search (:func:`airloop.runtime.training.search.run_search`: Ray Tune, the
demo spec's search space, seeded sampler, ASHA) against the same search with
``grace_period = max_iterations`` — the same configurations, none stopped early.
One Ray session for all rounds; wall time of the search and best validation score.

Two data sizes: the demo's (8,400 rows, where Ray Tune's fixed cost per search — trial
actors, ~5 s on 2 cores — is a large part of the wall time) and 4x that (33,600 rows,
where training dominates). The goal is judged on the demo size; the larger case shows
how the ratio moves when the work grows.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.common import Goal, Row, main, median, not_measured, result, why

CMP = "4 tuning"
ROUNDS = 2
DAYS, ROWS_PER_DAY = 14, 600
SCALES = (1, 4)  # rows per day x this


def training_frame(scale: int = 1):
    """14 days of generated churn rows (the split is by time: train/valid/holdout)."""
    import pandas as pd

    from benchmarks.data import churn_frame

    start = datetime(2026, 1, 1, tzinfo=UTC)
    frames = [churn_frame(ROWS_PER_DAY * scale, seed=100 + d, entities=5_000,
                          start=start + timedelta(days=d)) for d in range(DAYS)]
    return pd.concat(frames, ignore_index=True)


def run(workdir: Path) -> dict:
    import ray

    from benchmarks import airloop_api
    from benchmarks.data import spec

    s = spec()
    rows: list[Row] = []
    goals: list[Goal] = []

    def case(scale: int) -> str:
        return (f"{s.model.num_samples} configs x {s.model.max_iterations} iterations, "
                f"{DAYS * ROWS_PER_DAY * scale} rows")

    try:
        search = airloop_api.tune_function(workdir)
    except Exception as exc:
        rows.append(not_measured(CMP, case(1), "airloop search (ASHA)", "airloop", why(exc)))
        goals.append(Goal(CMP, "within 1% of the full search's best in <= 0.5x its time",
                          "not measured", None))
        return result(rows, goals)
    tmp = Path(f"/tmp/alb-ray-{os.getpid()}")  # short: Ray's unix socket path limit
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=str(tmp),
             log_to_driver=False, logging_level="ERROR")
    metric = s.metric.name
    try:
        for scale in SCALES:
            frame = training_frame(scale)
            out = {"asha": [], "full": []}
            for _ in range(ROUNDS):
                out["asha"].append(search(frame, False))
                out["full"].append(search(frame, True))
            for key, path, role in (("asha", "airloop search (ASHA)", "airloop"),
                                    ("full", "same configurations, all to completion", "floor")):
                r = out[key]
                rows.append(Row(CMP, case(scale), path, role, "wall time", "s",
                                [x[0] for x in r]))
                rows.append(Row(CMP, case(scale), path, role, f"best {metric} (validation)", "",
                                [x[1] for x in r],
                                f"trials stopped early per round: {[x[2] for x in r]}",
                                lower_is_better=False))
            wa, wf = median([x[0] for x in out["asha"]]), median([x[0] for x in out["full"]])
            sa, sf = median([x[1] for x in out["asha"]]), median([x[1] for x in out["full"]])
            measured = (f"{metric} {sa:.4f} vs {sf:.4f} ({(sa / sf - 1) * 100:+.2f}%), "
                        f"time {wa / wf:.2f}x")
            if scale == 1:
                goals.append(Goal(CMP, "best within 1% of the full search's in <= 0.5x its "
                                  "wall time", measured, sa >= 0.99 * sf and wa <= 0.5 * wf))
            else:
                goals.append(Goal(CMP, f"same, {scale}x the rows (informational)", measured,
                                  None))
    finally:
        ray.shutdown()
    return result(rows, goals)


if __name__ == "__main__":
    main(run)
