"""Materialize: Feast offline store → online store, incrementally.

Contract
--------
Inputs: the project's dataset (written by ingest) and its spec's feature views.
Outputs: the Feast registry updated (``apply``) and every view's latest values per
entity written to the online store (SQLite locally, Redis when
``AIRLOOP_FEAST_ONLINE`` says so) up to now. The first run covers the whole dataset
(Feast starts from the views' ttl); later runs only the new interval.
Result: ``{"views", "end", "online", "entities"}``. Idempotent: re-running writes the
same latest values again.
"""

from __future__ import annotations


def run(spec, *, run_id: str, settings) -> dict:
    import pandas as pd

    from airloop.features import store
    from airloop.layout import layout

    result = store.materialize(spec, settings)
    dataset = layout(spec, settings).dataset_file
    entities = int(pd.read_parquet(dataset, columns=[spec.entity_key])[spec.entity_key].nunique())
    return {**result, "entities": entities}
