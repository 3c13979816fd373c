"""The project's ``FeatureStore`` and the reads the steps make from it.

Online store: SQLite under the project folder by default, Redis when
``AIRLOOP_FEAST_ONLINE=redis://host:port/db`` is set (production). Offline store:
DuckDB over the dataset parquet (Feast's file/dask store silently drops entity rows).
Registry: a file under the project folder. Everything through the Python API — the
``feast`` CLI costs seconds of imports per call.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import urlparse

import pandas as pd
from feast import FeatureStore, RepoConfig
from feast.errors import FeatureServiceNotFoundException

from airloop.core.errors import AirloopError
from airloop.core.layout import layout
from airloop.runtime import versioning
from airloop.runtime.features.entities import entity
from airloop.runtime.features.services import feature_service
from airloop.runtime.features.sources import dataset_source
from airloop.runtime.features.views import feature_views


def _online_config(spec, settings):
    url = settings.feast_online  # validated: a redis:// URL or None
    if url:
        parsed = urlparse(url)
        db = (parsed.path or "/0").lstrip("/") or "0"
        conn = f"{parsed.hostname}:{parsed.port or 6379},db={db}"
        if parsed.password:
            conn += f",password={parsed.password}"
        if url.startswith("rediss://"):
            conn += ",ssl=true"
        return {"type": "redis", "connection_string": conn}
    return {"type": "sqlite", "path": str(layout(spec, settings).online_store)}


def online_location(spec, settings) -> str:
    """Where the online store lives, as :class:`airloop.serving.online.OnlineReader` takes
    it: the ``redis://`` URL when ``AIRLOOP_FEAST_ONLINE`` is set, else the SQLite file."""
    if settings.feast_online:
        return settings.feast_online
    return str(layout(spec, settings).online_store)


def repo_objects(spec, settings) -> list:
    """Entity, source, feature views and the feature service of the project."""
    ent = entity(spec)
    views = feature_views(spec, ent, dataset_source(spec, settings))
    return [ent, *views, feature_service(spec, views)]


def feature_store(spec, settings):
    paths = layout(spec, settings)
    paths.feast.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(
        project=spec.feast_project,
        registry=str(paths.feast / "registry.db"),
        provider="local",
        online_store=_online_config(spec, settings),
        offline_store={"type": "duckdb"},
        entity_key_serialization_version=3,
        repo_path=str(paths.feast),
    )
    return FeatureStore(config=config)


def apply(spec, settings):
    """Register the project's objects (idempotent) and return the store."""
    store = feature_store(spec, settings)
    store.apply(repo_objects(spec, settings))
    return store


def _dataset(spec, settings, columns=None):
    path = layout(spec, settings).dataset_file
    if not path.is_file():
        raise AirloopError(f"no dataset for {spec.name} at {path}: run the ingest step first")
    return pd.read_parquet(path, columns=columns)


def training_frame(spec, settings):
    """Point-in-time training rows: [entity, timestamp, *features, label], by time.

    The entity dataframe is every (entity, timestamp, label) of the dataset; features
    come from Feast's historical retrieval, so a row only ever sees feature values at
    or before its own timestamp. The spec's objects are applied first (idempotent), so
    training works before the first materialization and always sees the spec's views.
    """
    entity_df = _dataset(spec, settings, [spec.entity_key, spec.timestamp, spec.label])
    store = apply(spec, settings)
    frame = store.get_historical_features(
        entity_df=entity_df, features=store.get_feature_service(spec.feature_service)
    ).to_df()
    if len(frame) != len(entity_df):
        raise AirloopError(
            f"Feast returned {len(frame)} training rows for {len(entity_df)} entity rows"
        )
    frame = frame[[spec.entity_key, spec.timestamp, *spec.feature_columns, spec.label]]
    return frame.sort_values([spec.timestamp, spec.entity_key], kind="stable").reset_index(
        drop=True
    )


def online_features(spec, settings, entity_ids):
    """Online feature rows of ``entity_ids`` through the Feast SDK (None where absent)."""
    store = feature_store(spec, settings)
    try:
        service = store.get_feature_service(spec.feature_service)
    except FeatureServiceNotFoundException:
        raise AirloopError(
            f"feature service {spec.feature_service} is not registered in Feast project "
            f"{spec.feast_project}: run the materialize step first"
        ) from None
    out = store.get_online_features(
        features=service,
        entity_rows=[{spec.entity_key: e} for e in entity_ids],
    ).to_dict()
    return pd.DataFrame(out)[[spec.entity_key, *spec.feature_columns]]


def latest_offline_features(spec, settings):
    """Each entity's latest feature row from the offline store (batch prediction input).

    Columns [entity, timestamp, *features], one row per entity, by entity; the timestamp
    is the entity's latest event time, and the features are Feast's point-in-time
    values as of that time (that row's own values).
    """
    keys = _dataset(spec, settings, [spec.entity_key, spec.timestamp])
    latest = keys.groupby(spec.entity_key, as_index=False)[spec.timestamp].max()
    store = apply(spec, settings)
    frame = store.get_historical_features(
        entity_df=latest, features=store.get_feature_service(spec.feature_service)
    ).to_df()
    return frame[[spec.entity_key, spec.timestamp, *spec.feature_columns]].sort_values(
        spec.entity_key
    ).reset_index(drop=True)


def _utc(value) -> datetime:
    ts = pd.Timestamp(value)
    return (ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)).to_pydatetime()


def _late_start(spec, settings, data):
    """Earliest event time among rows ingested since the last materialization, when it
    may lie before a view's last materialized end (rows that arrived late)."""
    state_file = layout(spec, settings).feast / "materialized.json"
    if not state_file.is_file():
        return None  # first run: every view starts ttl before now anyway
    done = json.loads(state_file.read_text()).get("data_version")
    history = versioning.history(spec, settings)
    seen = [i for i, entry in enumerate(history) if entry["md5"] == done]
    newer = history[seen[-1] + 1 :] if seen else history
    if not newer:
        return None
    if any(not entry.get("events") for entry in newer):
        return _utc(data[spec.timestamp].min())  # unknown: refresh everything
    return min(_utc(entry["events"]["start"]) for entry in newer)


def materialize(spec, settings, end: datetime | None = None) -> dict:
    """Apply, then materialize offline → online from where the last run ended to ``end``.

    Each view's window starts where its previous materialization ended; the first run
    starts ``ttl`` before now, i.e. covers the whole dataset. Rows ingested since the
    last run with event times before that point (late data, e.g. a backfilled day)
    pull the start back to their earliest event time, read from the DVC version
    history, so they are never skipped. Feast writes each entity's latest row inside
    the window, so re-running with nothing new writes nothing. Returns the views, the
    window (start, end), the dataset rows inside it and the entities written.
    """
    data = _dataset(spec, settings, [spec.entity_key, spec.timestamp])
    store = apply(spec, settings)
    end = _utc(end or datetime.now(UTC))
    names = list(spec.feature_views)
    late = _late_start(spec, settings, data)
    starts = {}
    for name in names:
        view = store.get_feature_view(name)
        start = _utc(view.most_recent_end_time or (datetime.now(UTC) - view.ttl))
        starts[name] = min(start, late) if late is not None else start
    start = min(starts.values())
    if start < end:
        store.materialize(start_date=start, end_date=end)
    state = layout(spec, settings).feast / "materialized.json"
    state.write_text(json.dumps({"data_version": versioning.current_version(spec, settings),
                                 "end": end.isoformat()}))
    ts = data[spec.timestamp]
    per_view, written = {}, set()
    for name, start in starts.items():
        rows = data[(ts >= start) & (ts <= end)]
        ids = set(rows[spec.entity_key].tolist())
        written |= ids
        per_view[name] = {"start": start.isoformat(), "rows": len(rows), "entities": len(ids)}
    return {
        "views": names,
        "window": {"start": min(starts.values()).isoformat(), "end": end.isoformat()},
        "rows": max((v["rows"] for v in per_view.values()), default=0),
        "entities": len(written),
        "per_view": per_view,
        "online": _online_config(spec, settings)["type"],
    }
