"""Thin adapter over the MLflow registry for serving: which version holds the `champion`
alias, and loading that version's model files."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

if TYPE_CHECKING:
    from training.pyfunc import Scorer

CHAMPION = "champion"
MODEL_FILES = "artifacts/model"  # the raw model folder inside the logged pyfunc model


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
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        # Source URI of each (model, version) seen with an alias: saves a lookup per load.
        self._sources: dict[tuple[str, str], str] = {}

    def champion_versions(self, names: list[str]) -> dict[str, str | None]:
        """Current champion version per model (None when a model has no champion)."""
        from mlflow.exceptions import MlflowException

        out: dict[str, str | None] = {}
        for name in names:
            try:
                found = self.client.get_model_version_by_alias(name, CHAMPION)
            except MlflowException:
                out[name] = None
                continue
            out[name] = str(found.version)
            self._sources[(name, str(found.version))] = str(found.source or "")
        return out

    def load(self, name: str, version: str) -> Champion:
        """Load a version's scorer (`model_files`, then `load_files`)."""
        return self.load_files(name, version, self.model_files(name, version))

    def load_files(self, name: str, version: str, files: str) -> Champion:
        """A version's scorer straight from its model folder `files` (booster and metadata),
        never through the pyfunc model: read in place when the artifact store is a local
        folder, else download only that folder. Makes no registry call, so versions can be
        loaded side by side in threads."""
        from training.pyfunc import load_scorer

        local = local_path(files)
        if local is not None:
            scorer = load_scorer(local)
        else:
            import mlflow.artifacts

            with tempfile.TemporaryDirectory() as tmp:
                folder = mlflow.artifacts.download_artifacts(
                    artifact_uri=files,
                    dst_path=tmp,
                    tracking_uri=self.tracking_uri,
                    registry_uri=self.tracking_uri,
                )
                scorer = load_scorer(Path(folder))
        service = str(scorer.meta.get("feature_service", ""))
        return Champion(name=name, version=version, scorer=scorer, feature_service=service)

    def model_files(self, name: str, version: str) -> str:
        """URI of a version's raw model folder: inside the logged model's artifacts (what a
        `models:/<model id>` source names), or else wherever the registry says its files
        are."""
        source = self._sources.get((name, version))
        if source is None:
            source = str(self.client.get_model_version(name, version).source or "")
        if source.startswith("models:/m-"):
            model_id = source.removeprefix("models:/").split("/")[0]
            location = str(self.client.get_logged_model(model_id).artifact_location)
        else:
            location = str(self.client.get_model_version_download_uri(name, version))
        return f"{location.rstrip('/')}/{MODEL_FILES}"

    def describe(self, name: str) -> dict[str, Any]:
        """Aliases of a model's versions, for /models."""
        model = self.client.get_registered_model(name)
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}


def local_path(uri: str) -> Path | None:
    """The folder a `file:` URI or a plain path names; None for any remote store."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme == "":
        return Path(uri)
    return None
