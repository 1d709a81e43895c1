"""Feast object definitions: entities, feature views, the on-demand view and feature services.

`build_definitions(data_dir)` creates every object for feature tables stored under
`data_dir`; the platform applies them through `features.store`, and `definitions.py` exposes
the same objects to the `feast` CLI. Consumers pin a versioned feature service (`churn_v1`),
never a loose list of features.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.on_demand_feature_view import OnDemandFeatureView, on_demand_feature_view
from feast.types import Float64, Int64

from features.columns import (
    ON_DEMAND_FLOAT,
    ON_DEMAND_VIEW,
    SERVICE_VIEWS,
    VIEW_COLUMNS,
    service_features,
)
from features.on_demand import ratios

PROJECT = "techflow"
# Feature rows are stamped with their cutoff and joined at exactly that cutoff; 20 days keeps
# materialization to the latest monthly row.
TTL = timedelta(days=20)


@dataclass(frozen=True)
class Definitions:
    """Every Feast object of the repo."""

    customer: Entity
    lead: Entity
    views: dict[str, FeatureView]
    on_demand: OnDemandFeatureView
    services: dict[str, FeatureService]

    def objects(self) -> list[Any]:
        """All objects, in the order `FeatureStore.apply` wants them."""
        return [
            self.customer,
            self.lead,
            *(v.batch_source for v in self.views.values()),
            *self.views.values(),
            self.on_demand,
            *self.services.values(),
        ]


def _fresh_copy(function: Any) -> Any:
    """A copy of a module-level function: Feast's decorator rebinds the function it wraps to
    `__main__` (so dill pickles it by value), which must not leak into the original."""
    copy = types.FunctionType(
        function.__code__, function.__globals__, function.__name__, function.__defaults__
    )
    copy.__doc__ = function.__doc__
    return copy


def build_definitions(data_dir: Path | str) -> Definitions:
    """Feast objects whose file sources are the feature tables under `data_dir`."""
    data_dir = Path(data_dir)
    customer = Entity(
        name="customer",
        join_keys=["customer_id"],
        value_type=ValueType.STRING,
        description="A TechFlow account, active or former (former ones carry win-back features).",
    )
    lead = Entity(
        name="lead",
        join_keys=["lead_id"],
        value_type=ValueType.STRING,
        description="A lead that never bought; aged after 12 months without a purchase.",
    )
    entity_of = {"customer_id": customer, "lead_id": lead}
    views = {}
    for name, (key, ints, floats) in VIEW_COLUMNS.items():
        source = FileSource(
            name=f"{name}_source",
            path=str(data_dir / name / "*.parquet"),
            file_format=ParquetFormat(),
            timestamp_field="event_timestamp",
        )
        views[name] = FeatureView(
            name=name,
            entities=[entity_of[key]],
            ttl=TTL,
            schema=[Field(name=n, dtype=Int64) for n in ints]
            + [Field(name=n, dtype=Float64) for n in floats],
            source=source,
            online=True,
            tags={"entity": key},
        )
    customer_view = views["customer_features"]
    ratios_view = on_demand_feature_view(
        name=ON_DEMAND_VIEW,
        sources=[
            customer_view[["revenue_12m", "seats", "sessions_per_week_4w", "active_users_4w"]]
        ],
        schema=[Field(name=n, dtype=Float64) for n in ON_DEMAND_FLOAT],
        mode="python",
        description="Ratios computed at lookup time from the customer view.",
    )(_fresh_copy(ratios))
    services = {}
    for service, view_names in SERVICE_VIEWS.items():
        wanted = set(service_features(service))
        projections = []
        for view_name in view_names:
            if view_name == ON_DEMAND_VIEW:
                projections.append(ratios_view)
            else:
                view = views[view_name]
                projections.append(view[[f.name for f in view.features if f.name in wanted]])
        services[service] = FeatureService(
            name=service,
            features=projections,
            description=f"Features of the {service.split('_')[0]} model, version 1.",
        )
    return Definitions(customer, lead, views, ratios_view, services)
