"""Build each layer's configuration from the one Settings object."""

from __future__ import annotations

from clv.settings import Settings
from features.store import StoreConfig


def store_config(settings: Settings) -> StoreConfig:
    """Feast configuration for the current settings."""
    return StoreConfig(
        features_dir=settings.features_dir,
        feast_dir=settings.feast_dir,
        online_store=settings.online_store,
        redis_url=settings.redis_url,
        registry=settings.feast_registry,
        registry_url=settings.feast_registry_url,
        project=settings.feast_project,
    )
