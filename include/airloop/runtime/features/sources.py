"""Data sources: the curated, DVC-versioned dataset written by the ingest step."""

from __future__ import annotations

from feast import FileSource

from airloop.core.layout import layout


def dataset_source(spec, settings):
    return FileSource(
        name=f"{spec.name}_dataset",
        path=str(layout(spec, settings).dataset_file),
        timestamp_field=spec.timestamp,
        description="Validated landing batches (airloop ingest), one parquet file",
        owner=spec.contact,
        tags={"tenant": spec.tenant, "project": spec.name, "owner": spec.contact},
    )
