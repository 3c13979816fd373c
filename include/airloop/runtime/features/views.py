"""Feature views: one per ``features.views[]`` entry, typed from ``data.columns``."""

from __future__ import annotations

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float64, Int64, String


def _feast_type(dtype: str):
    return {"int64": Int64, "float64": Float64, "string": String}[dtype]


def feature_views(spec, entity, source) -> list:
    dtypes = {c.name: c.dtype for c in spec.columns}
    ttl = timedelta(days=spec.features.ttl_days)
    return [
        FeatureView(
            name=view.name,
            entities=[entity],
            ttl=ttl,
            schema=[Field(name=f, dtype=_feast_type(dtypes[f])) for f in view.features],
            source=source,
            online=True,
            description=view.description,
            owner=spec.contact,
            tags={"tenant": spec.tenant, "project": spec.name, "owner": spec.contact},
        )
        for view in spec.features.views
    ]
