"""Feature services: the versioned set of features a model of the project consumes."""

from __future__ import annotations

from feast import FeatureService


def feature_service(spec, views: list):
    return FeatureService(
        name=spec.feature_service,
        features=views,
        description=f"Model inputs of {spec.name} (spec features.service_version)",
        owner=spec.contact,
        tags={"tenant": spec.tenant, "project": spec.name, "owner": spec.contact},
    )
