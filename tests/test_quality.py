"""Model quality against ground truth at reduced size (slow: `make test-slow`).

The targets of the training issue: test ROC-AUC within 0.02 of the oracle's for churn,
expansion and referral, within 0.03 for reactivation; ECE <= 0.02; CLV MAE better than the
naive "last 12 months repeat" baseline. The measured figures are printed either way.

The gap is checked twice: on this test set's labels (the target as written), and in
expectation over labels drawn from the true probabilities, which takes the luck of one draw
out (at this size a reactivation test set holds about 25 conversions, and its realised gap
strays by about 0.03 either way).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.pipeline import build_features, read_raw
from features.store import StoreConfig, apply, built_cutoffs, open_store
from simulator.io import write_world
from simulator.world import simulate
from training.job import JobConfig, train
from training.specs import SPECS

pytestmark = pytest.mark.slow

GAP = {"churn": 0.02, "expansion": 0.02, "referral": 0.02, "reactivation": 0.03}
SCALE = 0.5
TRIALS = 10


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    home: Path = tmp_path_factory.mktemp("quality")
    write_world(simulate(months=36, scale=SCALE, seed=42), home / "raw", home / "truth")
    report = build_features(home / "raw", home / "features", now=pd.Timestamp("2027-06-01"))
    store = open_store(StoreConfig(features_dir=home / "features", feast_dir=home / "feast"))
    apply(store, home / "features")
    config = JobConfig(
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        artifacts_dir=home / "artifacts",
        study_storage=f"sqlite:///{home / 'optuna.db'}",
        truth_dir=home / "truth",
        trials=TRIALS,
        seed=42,
    )
    raw = read_raw(home / "raw")
    cutoffs = built_cutoffs(home / "features")
    return {name: train(SPECS[name], config, raw, store, cutoffs, report.as_of) for name in SPECS}


@pytest.mark.parametrize("name", list(GAP))
def test_auc_within_reach_of_the_oracle(trained, name):
    m = trained[name].metrics
    gap = m["oracle_roc_auc"] - m["roc_auc"]
    print(
        f"{name}: roc_auc {m['roc_auc']:.4f} oracle {m['oracle_roc_auc']:.4f} gap {gap:.4f}"
        f" (feature ceiling {m['ceiling_roc_auc']:.4f}, ece {m['ece']:.4f}; expected gap"
        f" {m['expected_gap_roc_auc']:.4f} +- {m['gap_noise_sd_roc_auc']:.4f})"
    )
    assert gap <= GAP[name]


@pytest.mark.parametrize("name", list(GAP))
def test_expected_auc_within_reach_of_the_oracle(trained, name):
    assert trained[name].metrics["expected_gap_roc_auc"] <= GAP[name]


@pytest.mark.parametrize("name", list(GAP))
def test_calibrated(trained, name):
    assert trained[name].metrics["ece"] <= 0.02


def test_clv_beats_the_naive_baseline(trained):
    m = trained["clv"].metrics
    assert m["mae"] < m["baseline_mae"]
