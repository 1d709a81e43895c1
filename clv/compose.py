"""Build each layer's configuration from the one Settings object."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from clv.settings import Settings
from features.store import StoreConfig
from serving.engine import EngineConfig

if TYPE_CHECKING:  # the training job pulls in plotting and SciPy; serving never needs them
    from training.job import JobConfig


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


def world_now(settings: Settings) -> pd.Timestamp:
    """Today, for data validation: a simulated world's own last day when the raw folder was
    written by the simulator (an advanced world lives in the future), else the clock."""
    from simulator.io import MANIFEST, Manifest

    if (settings.raw_dir / MANIFEST).exists():
        return max(pd.Timestamp(Manifest.read(settings.raw_dir).as_of), pd.Timestamp.now())
    return pd.Timestamp.now()


def git_revision() -> str:
    """The code revision the job runs (tagged on every model version)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return "unknown"
    revision = out.stdout.strip()
    if out.returncode != 0 or not revision:
        return "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return revision + ("-dirty" if dirty else "")


def job_config(
    settings: Settings, trials: int | None = None, workers: int | None = None, join: bool = False
) -> JobConfig:
    """Training-job configuration for the current settings."""
    from training.job import JobConfig

    truth = settings.truth_dir if settings.truth_dir.exists() else None
    return JobConfig(
        tracking_uri=settings.tracking_uri,
        artifacts_dir=settings.artifacts_dir,
        study_storage=settings.study_storage,
        truth_dir=truth,
        trials=settings.trials if trials is None else trials,
        seed=settings.seed,
        git_revision=git_revision(),
        workers=settings.train_workers if workers is None else workers,
        join=join,
        dask_scheduler=settings.dask_scheduler,
        dask_workers=settings.dask_workers,
    )


def engine_config(settings: Settings) -> EngineConfig:
    """Scoring-engine configuration for the current settings."""
    return EngineConfig(
        tracking_uri=settings.tracking_uri,
        store=store_config(settings),
        poll_seconds=settings.poll_seconds,
        batch_limit=settings.batch_limit,
    )
