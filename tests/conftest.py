"""Shared fixtures: one small simulated world per test session, real folders in tmp paths."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

# Telemetry off for every library the tests touch (the Makefile and CI set these too).
os.environ.setdefault("FEAST_USAGE", "False")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("DO_NOT_TRACK", "1")

SMALL_SCALE = 0.05
RATE_SCALE = 1.0


@pytest.fixture(scope="session")
def small_world():
    """A 36-month world at 5% of the default size (about 620 active customers)."""
    from simulator.world import simulate

    return simulate(months=36, scale=SMALL_SCALE, seed=7)


@pytest.fixture(scope="session")
def rate_world():
    """The default-size world (seed 42): the stated tolerances apply at this size."""
    from simulator.world import simulate

    return simulate(months=36, scale=RATE_SCALE, seed=42)


NOW = "2027-06-01"


@pytest.fixture(scope="session")
def feast_home(tmp_path_factory, small_world):
    """A simulated world with features built, applied and materialized in a temp CLV_HOME."""
    from features.pipeline import build_features
    from features.store import StoreConfig, apply, materialize, open_store
    from simulator.io import write_world

    home = tmp_path_factory.mktemp("feast_home")
    write_world(small_world, home / "raw", home / "truth")
    report = build_features(home / "raw", home / "features", now=pd.Timestamp(NOW))
    config = StoreConfig(features_dir=home / "features", feast_dir=home / "feast")
    store = open_store(config)
    apply(store, config.features_dir)
    materialize(store, config.features_dir, report.as_of)
    return home, config, store, report


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty CLV_HOME for one test."""
    monkeypatch.setenv("CLV_HOME", str(tmp_path / "var"))
    return tmp_path / "var"


@pytest.fixture(scope="session")
def served_home(feast_home):
    """feast_home plus an MLflow store in it with churn v1, v2 and clv v1, v1 as champions."""
    from mlflow.tracking import MlflowClient

    from features.pipeline import read_raw
    from features.store import built_cutoffs
    from training.job import JobConfig, train
    from training.specs import SPECS

    home, config, store, report = feast_home
    job = JobConfig(
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        artifacts_dir=home / "mlartifacts",
        study_storage=f"sqlite:///{home / 'optuna.db'}",
        truth_dir=home / "truth",
        trials=2,
        seed=3,
        git_revision="test",
    )
    raw = read_raw(home / "raw")
    cutoffs = built_cutoffs(home / "features")
    train(SPECS["churn"], job, raw, store, cutoffs, report.as_of)
    train(SPECS["clv"], job, raw, store, cutoffs, report.as_of)
    second = JobConfig(**{**job.__dict__, "seed": 4})
    train(SPECS["churn"], second, raw, store, cutoffs, report.as_of)
    client = MlflowClient(job.tracking_uri, registry_uri=job.tracking_uri)
    client.set_registered_model_alias("churn", "champion", "1")
    client.set_registered_model_alias("clv", "champion", "1")
    return home, job.tracking_uri, report
