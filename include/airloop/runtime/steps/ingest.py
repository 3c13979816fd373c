"""Ingest: landing zone → validate (Great Expectations) → dataset → version (DVC).

Contract
--------
Inputs: files in the project's ``landing/`` folder (``data.format``; dotfiles and
``*.tmp`` are ignored as still being written).
Outputs: valid rows appended to ``dataset/features.parquet`` (the Feast offline
source), de-duplicated on (entity, timestamp); each ingested file moved to
``processed/``; each invalid or unreadable file moved to ``quarantine/`` next to a
``<file>.errors.json`` listing what failed; the dataset versioned with DVC.
Result: ``{"files", "rows_added", "total_rows", "data_version", "quarantined"}``.
Idempotent: a file is consumed once (moved), and rows already in the dataset are
never added twice, so a retried try after a crash adds nothing new.
Failure: when any file was quarantined, the good ones are ingested first, then
:class:`~airloop.core.errors.ValidationFailed` names each bad file and its failures.
"""

from __future__ import annotations

import fcntl
import shutil
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from airloop.core.errors import AirloopError, ValidationFailed
from airloop.core.io import atomic_path, write_json
from airloop.core.layout import layout
from airloop.runtime import validation, versioning


def landing_files(folder: Path, fmt: str) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".tmp")
    )


def _read(path: Path, fmt: str):
    if path.suffix == ".parquet" or fmt == "parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path)


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists():  # never overwrite an earlier file of the same name
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        target = folder / f"{path.stem}.{stamp}{path.suffix}"
    shutil.move(str(path), target)
    return target


def _quarantine(path: Path, folder: Path, run_id: str, failures: list[dict]) -> str:
    target = _move(path, folder)
    report = {"file": path.name, "run_id": run_id, "at": datetime.now(UTC).isoformat(),
              "failures": failures}
    write_json(target.with_name(target.name + ".errors.json"), report)
    return target.name


def _summary(failures: list[dict]) -> str:
    parts = []
    # A missing column fails each of its value checks too; the column-set entry says it.
    shown = [f for f in failures if f.get("observed") != "column missing from the file"]
    for f in shown[:3]:
        what = f["expectation"].removeprefix("expect_")
        if f.get("missing") or f.get("unexpected"):  # name the columns, not just the check
            what += f"(missing {','.join(f['missing']) or '-'}; "
            what += f"unexpected {','.join(f['unexpected']) or '-'})"
        parts.append(f"{what}({f['column']})" if f.get("column") else what)
    more = f" +{len(failures) - len(parts)} more" if len(failures) > len(parts) else ""
    return f"{len(failures)} failed expectation(s): " + ", ".join(parts) + more


def _typed(frame, spec):
    out = frame[[spec.entity_key, spec.timestamp, *[c.name for c in spec.columns], spec.label]]
    out = out.astype(
        {
            **{c.name: ("int64" if c.dtype == "int64" and not c.nullable else
                        "float64" if c.dtype != "string" else "string")
               for c in spec.columns},
            spec.label: "int64",
            **({spec.entity_key: "int64"} if spec.entity_dtype == "int64" else {}),
        }
    )
    return out


def append_rows(spec, settings, frame) -> tuple[int, int, tuple | None]:
    """Append rows not yet in the dataset.

    Returns (rows added, total rows, (earliest, latest) event time of the added rows or
    None when nothing was added).
    """
    path = layout(spec, settings).dataset_file
    keys = [spec.entity_key, spec.timestamp]
    if path.is_file():
        current = pd.read_parquet(path)
        merged = pd.concat([current, frame], ignore_index=True)
    else:
        current = None
        merged = frame
    merged = merged.drop_duplicates(subset=keys, keep="first")
    known = 0 if current is None else len(current)
    fresh = merged[spec.timestamp][merged.index >= known]  # rows that came from `frame`
    window = (fresh.min().to_pydatetime(), fresh.max().to_pydatetime()) if len(fresh) else None
    merged = merged.sort_values(keys, kind="stable")
    added = len(merged) - known
    if added:
        with atomic_path(path) as tmp:
            merged.reset_index(drop=True).to_parquet(tmp, index=False)
    return added, len(merged), window


@contextmanager
def _exclusive(paths):
    """One ingest per project at a time (a manual run next to a scheduled one would
    otherwise read the same landing files and race on the dataset file)."""
    paths.dataset.mkdir(parents=True, exist_ok=True)
    with open(paths.dataset / ".ingest.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AirloopError(
                f"another ingest of {paths.root} is running; retry when it has finished"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run(spec, *, run_id: str, settings) -> dict:
    """Validate, version and store every new landing file (see module docstring)."""
    paths = layout(spec, settings)
    with _exclusive(paths):
        return _ingest(spec, paths, run_id=run_id, settings=settings)


def _ingest(spec, paths, *, run_id: str, settings) -> dict:
    fmt = spec.data.format
    files = landing_files(paths.landing, fmt)
    quarantined: list[tuple[str, str]] = []
    good = []
    validator = validation.Validator(spec) if files else None
    for path in files:
        try:
            raw = _read(path, fmt)
        except Exception as exc:  # any parser error: the file is unreadable
            name = _quarantine(path, paths.quarantine, run_id, [
                {"expectation": "expect_file_to_be_readable", "column": None,
                 "exception": f"{type(exc).__name__}: {exc}"[:500]}])
            quarantined.append((name, "unreadable"))
            continue
        frame = validation.coerce(raw, spec)
        outcome = validator.validate(frame, raw=raw)
        if not outcome.success:
            name = _quarantine(path, paths.quarantine, run_id, outcome.failures)
            quarantined.append((name, _summary(outcome.failures)))
            continue
        good.append((path, _typed(frame, spec)))

    rows_added, total, window = 0, None, None
    if good:
        batch = pd.concat([f for _, f in good], ignore_index=True)
        rows_added, total, window = append_rows(spec, settings, batch)
        for path, _ in good:
            _move(path, paths.processed)
    version = versioning.current_version(spec, settings)
    if good:
        # Also when no row was new: a try that crashed after writing the dataset but
        # before versioning it is completed here (commit is a no-op when unchanged).
        version = versioning.commit(spec, settings, run_id=run_id, rows=total, events=window)
    if total is None and paths.dataset_file.is_file():
        total = len(pd.read_parquet(paths.dataset_file, columns=[spec.entity_key]))
    if quarantined:
        detail = "; ".join(f"{name}: {why}" for name, why in quarantined)
        raise ValidationFailed(
            f"{len(quarantined)} of {len(files)} landing file(s) failed validation and were "
            f"quarantined in {paths.quarantine} ({detail}); {len(good)} valid file(s) ingested"
        )
    return {
        "files": len(good),
        "rows_added": rows_added,
        "total_rows": total or 0,
        "data_version": version,
        "quarantined": [],
    }
