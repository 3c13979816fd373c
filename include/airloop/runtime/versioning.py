"""Dataset versioning with DVC (Python API; no Git needed: ``no_scm``).

The project folder is a DVC repository; the curated dataset file is tracked with
``dvc add`` and pushed to a content-addressed remote (a local folder by default,
``settings.dvc_remote/<tenant>/<project>``; S3 in production via the same config).
Each version is the dataset's MD5 as DVC records it; ``dataset/versions.jsonl`` keeps
the history (run id, md5, rows, time), and every version can be fetched back from the
remote with its ``.dvc`` record (kept as ``dataset/versions/<md5>.yaml``; not ``.dvc``,
which DVC would take for a second stage).
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import yaml
from dvc.repo import Repo

from airloop.core.errors import AirloopError
from airloop.core.layout import layout


def _repo(root: Path, remote: Path):
    if not (root / ".dvc").is_dir():
        Repo.init(str(root), no_scm=True)
    repo = Repo(str(root))
    remote.mkdir(parents=True, exist_ok=True)
    with repo.config.edit() as conf:
        conf["remote"]["local"] = {"url": str(remote)}
        conf["core"]["remote"] = "local"
        conf["core"]["autostage"] = False
    return repo


def _md5(dvc_file: Path) -> str:
    meta = yaml.safe_load(dvc_file.read_text())
    return meta["outs"][0]["md5"]


def commit(spec, settings, *, run_id: str, rows: int, events: tuple | None = None) -> str:
    """Track and push the current dataset; returns its version (MD5). Idempotent.

    ``events`` is the (earliest, latest) event time of the rows this version added, kept
    in the history so that materialization can reach back for late-arriving rows;
    ``None`` means unknown (materialization then refreshes the whole dataset).
    """
    paths = layout(spec, settings)
    data = paths.dataset_file
    if not data.is_file():
        raise AirloopError(f"nothing to version: {data} does not exist")
    remote = settings.dvc_remote / spec.tenant / spec.name
    repo = _repo(paths.root, remote)
    try:
        repo.add(str(data))
        repo.push()
    finally:
        repo.close()
    dvc_file = data.with_name(data.name + ".dvc")
    md5 = _md5(dvc_file)
    history = paths.dataset / "versions"
    history.mkdir(exist_ok=True)
    if not (history / f"{md5}.yaml").exists():
        shutil.copyfile(dvc_file, history / f"{md5}.yaml")
    log = paths.dataset / "versions.jsonl"
    if current_version(spec, settings) != md5:
        with log.open("a") as fh:
            fh.write(
                json.dumps(
                    {"run_id": run_id, "md5": md5, "rows": rows,
                     "ts": datetime.now(UTC).isoformat(),
                     "events": None if events is None else
                     {"start": events[0].isoformat(), "end": events[1].isoformat()}}
                )
                + "\n"
            )
    return md5


def history(spec, settings) -> list[dict]:
    log = layout(spec, settings).dataset / "versions.jsonl"
    if not log.is_file():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def current_version(spec, settings) -> str | None:
    """The MD5 of the dataset's latest version, or None before the first ingest."""
    entries = history(spec, settings)
    return entries[-1]["md5"] if entries else None
