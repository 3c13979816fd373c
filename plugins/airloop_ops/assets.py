"""Assets, declared once: producers (outlets) and consumers (schedules) import them here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import Asset

if TYPE_CHECKING:
    from airloop.core.spec import ProjectSpec


def dataset(spec: ProjectSpec) -> Asset:
    """The project's validated, versioned data in the offline store (written by ingest)."""
    return Asset(
        name=f"{spec.name}__dataset",
        uri=f"airloop://{spec.tenant}/{spec.name}/offline",
        group="airloop",
        extra={"tenant": spec.tenant, "project": spec.name},
    )
