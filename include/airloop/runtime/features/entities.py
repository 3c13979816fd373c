"""Entities: one per project, the spec's ``data.entity``."""

from __future__ import annotations

from feast import Entity, ValueType


def entity(spec):
    value_type = ValueType.INT64 if spec.entity_dtype == "int64" else ValueType.STRING
    return Entity(
        name=spec.entity_name,
        join_keys=[spec.entity_key],
        value_type=value_type,
        description=f"{spec.entity_name} of project {spec.name}",
        owner=spec.contact,
        tags={"tenant": spec.tenant, "project": spec.name, "owner": spec.contact},
    )
