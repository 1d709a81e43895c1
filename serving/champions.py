"""Thin adapter over the MLflow registry for serving: which version holds the `champion`
alias, and loading that version's model files."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.pyfunc import Scorer

CHAMPION = "champion"


@dataclass(frozen=True)
class Champion:
    """A loaded champion model."""

    name: str
    version: str
    scorer: Scorer
    feature_service: str
    loaded_at: float = field(default_factory=time.time)

    @property
    def features(self) -> list[str]:
        return self.scorer.features


class Registry:
    """Read-only view of the model registry that the service polls."""

    def __init__(self, tracking_uri: str) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        # Model URIs resolve through the process-wide URIs; the service has one store.
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def champion_versions(self, names: list[str]) -> dict[str, str | None]:
        """Current champion version per model (None when a model has no champion)."""
        from mlflow.exceptions import MlflowException

        out: dict[str, str | None] = {}
        for name in names:
            try:
                out[name] = str(self.client.get_model_version_by_alias(name, CHAMPION).version)
            except MlflowException:
                out[name] = None
        return out

    def load(self, name: str, version: str) -> Champion:
        """Download a version's files and load its scorer."""
        import mlflow

        from training.pyfunc import load_scorer

        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=tmp
            )
            folder = Path(local) / "artifacts" / "model"
            scorer = load_scorer(folder)
        service = str(scorer.meta.get("feature_service", ""))
        return Champion(name=name, version=version, scorer=scorer, feature_service=service)

    def describe(self, name: str) -> dict[str, Any]:
        """Aliases of a model's versions, for /models."""
        model = self.client.get_registered_model(name)
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}
