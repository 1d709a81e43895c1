"""Thin adapter over MLflow's registry and tracking client: the only registry module that
imports mlflow.

Every call names the tracking URI explicitly (never MLflow's process-wide default), so the
same code works on the embedded SQLite store and on a tracking server. The audit trail is an
MLflow experiment, `registry-audit`, with one run per decision whose *params* hold the record:
MLflow params cannot be changed once written, so each record is append-only, and any tracking
server stores them without an artifact store.
"""

from __future__ import annotations

import logging
import posixpath
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.artifacts import download_artifacts
from mlflow.entities import Param
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.protos.databricks_pb2 import (
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.tracking import MlflowClient

from registry.records import AuditEntry, VersionInfo
from training.pyfunc import Scorer, load_scorer

log = logging.getLogger(__name__)

AUDIT_EXPERIMENT = "registry-audit"
TEST_SET = "test_set.parquet"
MODEL_FILES = "artifacts/model"  # the raw model folder inside the logged pyfunc model
PAGE = 1000
# Names that can go into an MLflow search filter unescaped (spec names are stricter still).
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RegistryStore:
    """Registry reads and writes for one tracking URI."""

    def __init__(self, tracking_uri: str, artifacts_dir: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self._artifacts_dir = artifacts_dir
        self._client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
        self._scorers: dict[tuple[str, str], Scorer] = {}

    # ---- models and versions -----------------------------------------------------------------
    def models(self) -> list[str]:
        """Names of every registered model."""
        names: list[str] = []
        token = None
        while True:
            page = self._client.search_registered_models(max_results=PAGE, page_token=token)
            names += [m.name for m in page]
            token = page.token
            if not token:
                return sorted(names)

    def require_model(self, model: str) -> None:
        """Raise LookupError unless `model` is registered (listing the registered ones)."""
        if not _SAFE_NAME.match(model) or model not in self.models():
            known = ", ".join(self.models()) or "none yet"
            raise LookupError(f"no registered model {model!r}; registered models: {known}")

    def versions(self, model: str) -> list[VersionInfo]:
        """Every version of `model`, oldest first."""
        self.require_model(model)
        found = []
        token = None
        while True:
            page = self._client.search_model_versions(
                f"name = '{model}'", max_results=PAGE, page_token=token
            )
            found += list(page)
            token = page.token
            if not token:
                break
        aliases = self.aliases(model)
        return sorted((_info(v, aliases) for v in found), key=lambda v: int(v.version))

    def version(self, model: str, version: str) -> VersionInfo:
        """One version; LookupError naming the model, the version and the versions it has."""
        known = self.versions(model)
        for info in known:
            if info.version == str(version):
                return info
        listed = ", ".join(v.version for v in known) or "none"
        raise LookupError(f"model {model} has no version {version!r}; its versions: {listed}")

    def latest(self, model: str) -> VersionInfo:
        """The most recently registered version."""
        known = self.versions(model)
        if not known:
            raise LookupError(f"model {model} has no versions yet; train it first")
        return known[-1]

    # ---- aliases and tags ----------------------------------------------------------------------
    def aliases(self, model: str) -> dict[str, str]:
        """alias -> version of `model`."""
        try:
            found = self._client.get_registered_model(model)
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise
            self.require_model(model)  # raises, listing the registered models
            raise
        return {k: str(v) for k, v in found.aliases.items()}

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self._client.set_registered_model_alias(model, alias, str(version))

    def delete_alias(self, model: str, alias: str) -> None:
        self._client.delete_registered_model_alias(model, alias)

    def set_tags(self, model: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self._client.set_model_version_tag(model, str(version), key, value)

    # ---- test rows, signature and scoring -----------------------------------------------------
    def test_set(self, info: VersionInfo) -> pd.DataFrame:
        """The test rows the training job logged with the version's run (keys, features,
        label)."""
        return self.logged_table(info, TEST_SET)

    def logged_table(self, info: VersionInfo, name: str) -> pd.DataFrame:
        """A parquet table logged with the version's run (e.g. its test rows, or the sample
        of its training rows that drift is measured against)."""
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self._download(run_id=info.run_id, artifact_path=name, dst_path=tmp)
            except (MlflowException, OSError) as exc:
                raise LookupError(
                    f"model {info.model} version {info.version}: its run {info.run_id} has no "
                    f"{name} ({exc})"
                ) from exc
            return pd.read_parquet(path)

    def signature_columns(self, info: VersionInfo) -> list[str]:
        """Input column names of the version's MLflow signature (empty when it has none)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = self._download(
                artifact_uri=posixpath.join(self._model_location(info), "MLmodel"), dst_path=tmp
            )
            signature = Model.load(path).signature
        if signature is None or signature.inputs is None:
            return []
        return [str(name) for name in signature.inputs.input_names()]

    def scorer(self, info: VersionInfo) -> Scorer:
        """The version's raw model files, loaded once (what the pyfunc wrapper predicts with)."""
        key = (info.model, info.version)
        if key not in self._scorers:
            with tempfile.TemporaryDirectory() as tmp:
                folder = self._download(
                    artifact_uri=posixpath.join(self._model_location(info), MODEL_FILES),
                    dst_path=tmp,
                )
                self._scorers[key] = load_scorer(Path(folder))
        return self._scorers[key]

    def score(self, info: VersionInfo, rows: pd.DataFrame) -> np.ndarray:
        """The version's predictions (calibrated probabilities, or values) for `rows`."""
        return self.scorer(info).predict_frame(rows)

    def _model_location(self, info: VersionInfo) -> str:
        if info.source.startswith("models:/"):
            model_id = info.source.removeprefix("models:/").split("/")[0]
            return str(self._client.get_logged_model(model_id).artifact_location)
        return info.source

    def _download(self, **where: str) -> str:
        return str(
            download_artifacts(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri, **where
            )
        )

    # ---- audit trail ---------------------------------------------------------------------------
    def record(self, entry: AuditEntry) -> str:
        """Append one decision to the audit trail; returns the run id holding it."""
        experiment = self._audit_experiment(create=True)
        assert experiment is not None
        at = datetime.fromisoformat(entry.at)
        millis = int(at.timestamp() * 1000)
        run = self._client.create_run(
            experiment,
            start_time=millis,
            tags={"model": entry.model, "action": entry.action, "version": entry.version},
            run_name=f"{entry.model}-v{entry.version}-{entry.action}",
        )
        params = [Param(k, v) for k, v in entry.to_params().items()]
        self._client.log_batch(run.info.run_id, params=params)
        self._client.set_terminated(run.info.run_id, end_time=millis)
        return str(run.info.run_id)

    def audit(self, model: str) -> list[AuditEntry]:
        """Every recorded decision about `model`, in time order."""
        experiment = self._audit_experiment(create=False)
        if experiment is None or not _SAFE_NAME.match(model):
            return []
        entries = []
        token = None
        while True:
            page = self._client.search_runs(
                [experiment],
                filter_string=f"params.model = '{model}'",
                order_by=["attributes.start_time ASC"],
                max_results=PAGE,
                page_token=token,
            )
            for run in page:
                try:
                    entries.append(AuditEntry.from_params(dict(run.data.params)))
                except (KeyError, ValueError) as exc:
                    log.warning("skipping audit run %s: %s", run.info.run_id, exc)
            token = page.token
            if not token:
                break
        return sorted(entries, key=lambda e: e.at)

    def _audit_experiment(self, create: bool) -> str | None:
        found = self._client.get_experiment_by_name(AUDIT_EXPERIMENT)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise LookupError(
                    f"the {AUDIT_EXPERIMENT} experiment is deleted in {self.tracking_uri}; "
                    "restore it (mlflow experiments restore) to keep the audit trail"
                )
            return str(found.experiment_id)
        if not create:
            return None
        location = None
        if self._artifacts_dir is not None and not self.tracking_uri.startswith(
            ("http://", "https://")
        ):
            location = (self._artifacts_dir / AUDIT_EXPERIMENT).resolve().as_uri()
        try:
            return str(self._client.create_experiment(AUDIT_EXPERIMENT, artifact_location=location))
        except MlflowException as exc:  # another process created it first
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            return self._audit_experiment(create=False)


def _info(version: ModelVersion, aliases: dict[str, str]) -> VersionInfo:
    number = str(version.version)
    return VersionInfo(
        model=version.name,
        version=number,
        run_id=version.run_id or "",
        source=version.source or "",
        tags=dict(version.tags or {}),
        aliases=tuple(sorted(a for a, v in aliases.items() if v == number)),
        created=datetime.fromtimestamp((version.creation_timestamp or 0) / 1000, UTC),
    )
