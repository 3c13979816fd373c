"""Where a project's files live (one folder per tenant and project).

``<data_dir>/<tenant>/<project>/`` holds::

    landing/       files dropped by producers (one batch per file)
    quarantine/    files that failed validation, each with <file>.errors.json
    processed/     landing files already ingested (kept, never deleted)
    dataset/       the curated, DVC-versioned dataset (Feast offline source)
    feast/         Feast registry and SQLite online store
    predictions/   prediction log, one JSONL file per UTC day
    feedback/      ground-truth labels by request id, one JSONL file per UTC day
    monitor/       drift reports and the retrain guard-rail state
    batch/         batch prediction tables
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from airloop.core.settings import Settings
from airloop.core.spec import ProjectSpec


@dataclass(frozen=True)
class ProjectLayout:
    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def processed(self) -> Path:
        return self.root / "processed"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def dataset_file(self) -> Path:
        """The Feast offline source: every validated row, one parquet file."""
        return self.dataset / "features.parquet"

    @property
    def feast(self) -> Path:
        return self.root / "feast"

    @property
    def online_store(self) -> Path:
        return self.feast / "online.db"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def feedback(self) -> Path:
        return self.root / "feedback"

    @property
    def monitor(self) -> Path:
        return self.root / "monitor"

    @property
    def batch(self) -> Path:
        return self.root / "batch"


def layout(spec: ProjectSpec, settings: Settings) -> ProjectLayout:
    return ProjectLayout(settings.project_dir(spec.tenant, spec.name))
