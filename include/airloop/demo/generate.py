"""``airloop generate``: write a demo project's synthetic daily batches to its landing zone."""

from __future__ import annotations

import argparse
import importlib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from airloop.core.errors import AirloopError
from airloop.core.io import atomic_path
from airloop.core.layout import layout
from airloop.core.settings import Settings
from airloop.core.spec import load_spec
from airloop.demo.churn import corrupt_batch


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``airloop generate``."""
    p.add_argument("--project", required=True, help="project spec with a data.generator")
    p.add_argument("--days", type=int, required=True, help="number of daily files to write")
    p.add_argument("--start-day", type=int, default=0, help="index of the first day (default 0)")
    p.add_argument(
        "--start-date",
        type=date.fromisoformat,
        default=None,
        help="date of day 0 (YYYY-MM-DD; default: so that the last file is yesterday, UTC)",
    )
    p.add_argument("--rows-per-day", type=int, default=800)
    p.add_argument("--drift-from-day", type=int, default=None, help="inject drift from this day")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--format", choices=("csv", "parquet"), default=None, help="default: the spec's")
    p.add_argument("--corrupt", action="store_true", help="also write one deliberately bad file")


def generator_for(spec):
    """Resolve ``data.generator`` (``module:function``) of a spec."""
    target = spec.data.generator
    if not target:
        raise AirloopError(f"project {spec.name!r} has no data.generator")
    module, _, func = target.partition(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise AirloopError(f"{spec.path}: data.generator {target!r} cannot be loaded: {exc}") from exc


def write_batch(frame, folder: Path, name: str, fmt: str = "csv") -> str:
    """One landing file, written atomically (the temporary dotfile is ignored by ingest)."""
    final = folder / f"{name}.{fmt}"
    with atomic_path(final) as tmp:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    return final.name


def generate(args: argparse.Namespace, settings: Settings) -> int:
    """``airloop generate``: ``--days`` daily files (and one bad one with ``--corrupt``)."""
    if args.days < 1 or args.rows_per_day < 1:
        raise AirloopError("--days and --rows-per-day must be >= 1")
    spec = load_spec(args.project, settings.projects_dir)
    make_day = generator_for(spec)
    fmt = args.format or spec.data.format
    last = args.start_day + args.days - 1
    start = args.start_date or (datetime.now(UTC).date() - timedelta(days=last + 1))
    landing = layout(spec, settings).landing
    for day in range(args.start_day, args.start_day + args.days):
        frame = make_day(
            spec, day, start=start, rows=args.rows_per_day,
            drift_from_day=args.drift_from_day, seed=args.seed,
        )
        stem = f"{spec.name}_{(start + timedelta(days=day)).isoformat()}"
        name = write_batch(frame, landing, stem, fmt)
        print(f"{name}: {len(frame)} rows")
    if args.corrupt:
        name = write_batch(corrupt_batch(spec, start=start, seed=args.seed), landing,
                      f"{spec.name}_corrupt_{start.isoformat()}", fmt)
        print(f"{name}: deliberately invalid")
    return 0
