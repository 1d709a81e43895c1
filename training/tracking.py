"""Thin adapter over MLflow tracking and registration for the training job."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

PINNED = [
    "mlflow==3.17.2",
    "xgboost-cpu==3.2.0",
    "scikit-learn==1.9.1",
    "pandas==2.3.3",
    f"numpy=={np.__version__}",
    "scipy",
]
PACKAGE_DIR = Path(__file__).parent


def configure(tracking_uri: str, artifacts_dir: Path, experiment: str) -> str:
    """Point MLflow (tracking and registry) at the store and make sure the model's
    experiment exists."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a line per run
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        location = None
        if not tracking_uri.startswith(("http://", "https://")):
            location = (artifacts_dir / experiment).resolve().as_uri()
        return client.create_experiment(experiment, artifact_location=location)
    return found.experiment_id


@contextlib.contextmanager
def parent_run(experiment_id: str, name: str, tags: dict[str, str]) -> Iterator[Any]:
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags) as run:
        yield run


def log_trial(number: int, params: dict[str, Any], value: float, rounds: int, metric: str):
    """One nested run per Optuna trial."""
    parent = mlflow.active_run()
    experiment = parent.info.experiment_id if parent else None
    with mlflow.start_run(run_name=f"trial-{number:03d}", nested=True, experiment_id=experiment):
        mlflow.log_params({**params, "num_rounds": rounds})
        mlflow.log_metric(f"valid_{metric}", value)


def log_params(params: dict[str, Any]) -> None:
    mlflow.log_params({k: v for k, v in params.items() if v is not None})


def log_metrics(metrics: dict[str, float], prefix: str = "") -> None:
    clean = {f"{prefix}{k}": float(v) for k, v in metrics.items() if np.isfinite(v)}
    mlflow.log_metrics(clean)


def log_folder(folder: Path, path: str | None = None) -> None:
    mlflow.log_artifacts(str(folder), artifact_path=path)


def log_table(frame: pd.DataFrame, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / name
        if name.endswith(".parquet"):
            frame.to_parquet(target, index=False)
        else:
            frame.to_csv(target, index=False)
        mlflow.log_artifact(str(target))


def log_json(data: dict[str, Any], name: str) -> None:
    mlflow.log_text(json.dumps(data, indent=1, default=str), name)


def log_and_register(
    model_folder: Path,
    example: pd.DataFrame,
    prediction: np.ndarray,
    registered_name: str,
    tags: dict[str, str],
) -> str:
    """Log the pyfunc model (float64 signature, input example, pinned requirements) and
    register it; returns the new version number. The version carries `tags`."""
    signature = infer_signature(example.astype(np.float64), prediction.astype(np.float64))
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(PACKAGE_DIR / "pyfunc_model.py"),
        artifacts={"model": str(model_folder)},
        signature=signature,
        input_example=example.astype(np.float64),
        pip_requirements=PINNED,
        code_paths=[str(PACKAGE_DIR)],
        registered_model_name=registered_name,
    )
    client = MlflowClient()
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, version, key, value)
    return version


def existing_version(name: str, tags: dict[str, str]) -> tuple[str, str, dict[str, float]] | None:
    """A registered version of `name` trained on the same data by the same code, if any:
    (version, run id, test metrics from its tags)."""
    client = MlflowClient()
    if client.search_registered_models(filter_string=f"name = '{name}'") == []:
        return None
    for version in client.search_model_versions(f"name = '{name}'"):
        vt = version.tags or {}
        if all(
            vt.get(k) == tags[k] for k in ("data_fingerprint", "git_revision", "feature_service")
        ):
            metrics = {
                k.removeprefix("metric."): float(v)
                for k, v in vt.items()
                if k.startswith("metric.")
            }
            return str(version.version), str(version.run_id), metrics
    return None
