"""Materialize: Feast offline store → online store, incrementally.

Contract
--------
Inputs: the project's dataset (written by ingest) and its spec's feature views.
Outputs: the Feast registry updated (``apply``) and every view's latest values per
entity written to the online store (SQLite locally, Redis when
``AIRLOOP_FEAST_ONLINE`` says so) up to now. The first run covers the whole dataset
(Feast starts from the views' ttl); later runs only the new interval.
Result: ``{"views", "window": {"start", "end"}, "rows", "entities", "per_view",
"online"}`` — the dataset rows inside the window and the entities whose online values
were written. Idempotent: a second run starts at the first one's end, so it writes
only what arrived since (nothing, if nothing did); the online values stay the latest.
Events older than a view's last materialization end reach training (offline) but not
the online store: materialize incrementally after each ingest, as the DAGs do.
"""

from __future__ import annotations

from airloop.runtime.features import store


def run(spec, *, run_id: str, settings) -> dict:
    """Apply the project's Feast objects and materialize up to now (see module doc)."""
    return store.materialize(spec, settings)
