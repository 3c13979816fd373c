"""The project's Feast feature repository, built from its spec.

Split by object kind like a hand-written Feast repo: :mod:`.entities`, :mod:`.sources`,
:mod:`.views`, :mod:`.services`; :mod:`.store` builds the ``FeatureStore`` from
settings (SQLite or Redis online store, DuckDB offline store) and serves training
frames and online/offline lookups. Feast is imported lazily by each module's functions.
"""
