"""Training: specs, labels, split, metrics, calibration, and the generic job against a real
Feast repo, a real SQLite MLflow store and a real Optuna storage."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from tests.factories import tiny_raw
from training import labels
from training.dataset import DatasetError, build_training_data, split_cutoffs
from training.evaluation import feature_ceiling
from training.job import JobConfig, study_name, train
from training.metrics import (
    classification_metrics,
    expected_calibration_error,
    expected_roc_auc,
    gap_noise_sd,
    lift_at,
)
from training.model import Calibrator
from training.specs import SPECS, Gate, ModelSpec, get_spec, load_specs
from training.tuning import StorageError

ts = pd.Timestamp


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(LookupError, match="valid models: churn, expansion, reactivation"):
        get_spec("chrun")


def test_specs_reject_inconsistent_fields(tmp_path: Path):
    with pytest.raises(ValueError, match="label 'table' needs label_table"):
        ModelSpec(**{**SPECS["churn"].model_dump(), "label": "table"})
    bad = tmp_path / "specs.toml"
    bad.write_text('[models.upsell_only]\nfeature_service = "expansion_v1"\n')
    with pytest.raises(ValueError, match="description"):
        load_specs(bad)


def test_labels_look_only_after_the_cutoff():
    raw = tiny_raw()
    population = pd.DataFrame({"customer_id": ["C1", "C2"], "cutoff": [ts("2024-07-01")] * 2})
    churn = labels.churn(raw, population, 3)
    assert list(churn["label"]) == [0.0, 1.0]  # C2 lapses on 2024-09-15
    assert list(labels.churn(raw, population, 2)["label"]) == [0.0, 0.0]
    may = population.assign(cutoff=ts("2024-05-01"))
    expansion = labels.expansion(raw, may, 3)
    assert list(expansion["cross_sell"]) == [1.0, 0.0]  # add-on bought 2024-06-12
    assert list(expansion["upsell"]) == [1.0, 0.0]  # upgrade 2024-05-20
    clv = labels.clv(raw, population, 12)
    assert list(clv["label"]) == [99.0, 0.0]  # only the 2024-08-01 invoice is after the cutoff
    assert list(labels.referral(raw, may, 3)["label"]) == [1.0, 0.0]
    active = labels.active_customers(raw, [ts("2024-07-01"), ts("2024-10-01")])
    assert list(active["customer_id"]) == ["C1", "C2", "C1"]


def test_reactivation_rows_are_touches_with_60_day_outcomes():
    raw = tiny_raw()
    population = labels.dormant_touched(raw, [ts("2024-08-01")])
    assert list(population["lead_id"]) == ["L3"] and list(population["kind"]) == ["lead"]
    assert list(labels.reactivation(raw, population, 3)["label"]) == [1.0]


def test_split_keeps_label_windows_apart():
    cutoffs = list(pd.date_range("2024-01-01", "2026-12-01", freq="MS"))
    split = split_cutoffs(SPECS["churn"], cutoffs, ts("2026-12-01"))
    assert split.test == [ts("2026-09-01")]
    assert split.valid == [ts("2026-05-01"), ts("2026-06-01")]  # valid_cutoffs = 2
    assert split.train[-1] == ts("2026-02-01") and split.train[0] == ts("2024-01-01")
    react = split_cutoffs(SPECS["reactivation"], cutoffs, ts("2026-12-01"))
    assert len(react.test) == 4 and react.valid[-1] < react.test[0]
    with pytest.raises(DatasetError, match="history too short"):
        split_cutoffs(SPECS["clv"], cutoffs[:13], ts("2025-02-01"))


def test_metrics_and_calibration():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.3, 20_000)
    y = (rng.random(len(p)) < p).astype(float)
    assert expected_calibration_error(y, p) < 0.01
    assert lift_at(y, p) > 1.5
    metrics = classification_metrics(y, p)
    assert 0.6 < metrics["roc_auc"] < 0.8 and metrics["rows"] == len(p)
    logit = np.log(p / (1 - p))
    skewed = 1 / (1 + np.exp(-(1.7 * logit + 0.8)))  # over-confident and too high
    assert expected_calibration_error(y, skewed) > 0.03
    fixed = Calibrator("sigmoid").fit(skewed[:10_000], y[:10_000]).transform(skewed[10_000:])
    assert expected_calibration_error(y[10_000:], fixed) < 0.015  # ~ the sampling floor
    with pytest.raises(ValueError, match="both classes"):
        classification_metrics(np.zeros(10), p[:10])


def test_the_feature_ceiling_tells_information_from_learning():
    """Fitted to the true probabilities, the ceiling ranks as well as the oracle when the
    features hold the whole truth, and by chance when they hold none of it."""
    rng = np.random.default_rng(0)
    n = 6000
    signal, noise = rng.normal(0, 1, n), rng.normal(0, 1, n)
    truth = 1 / (1 + np.exp(-(-2 + 1.5 * signal)))
    y = (rng.random(n) < truth).astype(float)
    fit, test = slice(0, 4000), slice(4000, None)
    oracle = classification_metrics(y[test], truth[test])["roc_auc"]
    full = pd.DataFrame({"signal": signal, "noise": noise})
    ceiling = roc_auc_score(y[test], feature_ceiling(full[fit], truth[fit], full[test]))
    assert abs(ceiling - oracle) < 0.01
    blind = pd.DataFrame({"noise": noise})
    chance = roc_auc_score(y[test], feature_ceiling(blind[fit], truth[fit], blind[test]))
    assert abs(chance - 0.5) < 0.05


def test_the_expected_auc_is_the_mean_auc_over_label_draws():
    """Labels redrawn from the true probabilities many times: their mean ROC-AUC is the expected
    AUC (ties included), and the spread of the oracle-minus-model gap is the noise estimate."""
    rng = np.random.default_rng(3)
    p = rng.beta(1, 15, 2000)
    score = np.round(p + rng.normal(0, 0.03, 2000), 2)  # rounding makes ties
    labels = rng.random((3000, 2000)) < p
    aucs = np.array([roc_auc_score(y, score) for y in labels])
    gaps = np.array([roc_auc_score(y, p) for y in labels]) - aucs
    assert expected_roc_auc(score, p) == pytest.approx(aucs.mean(), abs=0.002)
    assert expected_roc_auc(p, p) > expected_roc_auc(score, p)
    assert gap_noise_sd(score, p, draws=400) == pytest.approx(gaps.std(), rel=0.15)
    assert expected_roc_auc(-score, p) == pytest.approx(1 - expected_roc_auc(score, p))
    with pytest.raises(ValueError, match="strictly between"):
        expected_roc_auc(score, np.zeros(2000))


@pytest.fixture()
def job(tmp_path: Path, feast_home):
    home, config, store, report = feast_home
    job_config = JobConfig(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifacts_dir=tmp_path / "artifacts",
        study_storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        truth_dir=home / "truth",
        trials=3,
        seed=1,
        git_revision="test",
    )
    from features.pipeline import read_raw
    from features.store import built_cutoffs

    raw = read_raw(home / "raw")
    return job_config, raw, store, built_cutoffs(home / "features"), report.as_of


def test_job_registers_a_calibrated_probability_model(job):
    config, raw, store, cutoffs, as_of = job
    result = train(SPECS["churn"], config, raw, store, cutoffs, as_of)
    assert result.version == "1" and result.trials == 3
    for name in ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_at_10pct"):
        assert np.isfinite(result.metrics[name]) and np.isfinite(result.metrics[f"oracle_{name}"])
    assert result.metrics["roc_auc"] > 0.6
    ceiling = result.metrics["ceiling_roc_auc"]
    assert 0.6 < ceiling < 1 and np.isfinite(result.metrics["ceiling_gap_roc_auc"])
    m = result.metrics
    assert m["expected_gap_roc_auc"] == pytest.approx(
        m["oracle_expected_roc_auc"] - m["expected_roc_auc"]
    )
    assert 0.5 < m["expected_roc_auc"] < m["oracle_expected_roc_auc"] < 1
    assert 0 < m["gap_noise_sd_roc_auc"] < 0.1 and 0.5 < m["ceiling_expected_roc_auc"] < 1

    client = MlflowClient(config.tracking_uri, registry_uri=config.tracking_uri)
    version = client.get_model_version("churn", "1")
    for tag in ("feature_service", "training_window", "data_fingerprint", "git_revision"):
        assert version.tags[tag], tag
    assert version.tags["feature_service"] == "churn_v1"
    assert float(version.tags["metric.roc_auc"]) == pytest.approx(result.metrics["roc_auc"])
    run = client.get_run(result.run_id)
    trials = client.search_runs(
        [run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{result.run_id}'"
    )
    assert len(trials) == 3
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert {"plots/roc.png", "plots/calibration.png", "plots/cumulative_gains.png"} <= artifacts

    mlflow.set_tracking_uri(config.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/churn/1")
    example = model.input_example
    types = {
        str(t).removeprefix("DataType.") for t in model.metadata.get_input_schema().input_types()
    }
    assert types == {"double"}
    scores = np.asarray(model.predict(example))
    assert scores.dtype == np.float64
    assert ((scores > 0) & (scores < 1)).all()
    assert len(np.unique(scores)) > 1  # probabilities, not 0/1 labels


def test_clv_compares_three_models_and_beats_naive(job):
    config, raw, store, cutoffs, as_of = job
    result = train(SPECS["clv"], config, raw, store, cutoffs, as_of)
    for prefix in ("", "bgnbd_", "naive_"):
        assert np.isfinite(result.metrics[f"{prefix}mae"])
    assert result.metrics["mae"] < result.metrics["baseline_mae"]
    assert "oracle_mae" in result.metrics
    mlflow.set_tracking_uri(config.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/clv/{result.version}")
    values = np.asarray(model.predict(model.input_example))
    assert (values >= 0).all() and values.max() > 50


def test_clv_registers_xgboost_when_the_probabilistic_fit_fails(job, monkeypatch):
    """BG/NBD + Gamma-Gamma is only the comparator: if it cannot be fitted, the job says so
    and the XGBoost regressor is still evaluated, compared with the naive baseline, and
    registered."""
    import training.job

    def no_fit(*_: object) -> None:
        raise ValueError("Gamma-Gamma fit did not converge: ABNORMAL")

    monkeypatch.setattr(training.job, "fit_bgnbd", no_fit)
    config, raw, store, cutoffs, as_of = job
    result = train(SPECS["clv"], config, raw, store, cutoffs, as_of)
    assert result.version and np.isfinite(result.metrics["mae"])
    assert "bgnbd_mae" not in result.metrics and "baseline_mae" in result.metrics
    assert any("not fitted" in note for note in result.notes), result.notes


def test_interrupted_study_resumes(job):
    config, raw, store, cutoffs, as_of = job
    first = train(SPECS["referral"], config, raw, store, cutoffs, as_of)
    more = JobConfig(**{**config.__dict__, "trials": 5})
    second = train(SPECS["referral"], more, raw, store, cutoffs, as_of)
    assert first.trials == 3 and second.trials == 5  # 2 new trials on the same study


def test_a_changed_spec_starts_a_study_of_its_own(job):
    config, raw, store, cutoffs, as_of = job
    spec = SPECS["referral"]
    data = build_training_data(spec, raw, store, cutoffs, as_of)
    capped = spec.model_copy(update={"max_rounds": 50})
    assert study_name(spec, data) == study_name(spec.model_copy(), data)
    assert study_name(capped, data) != study_name(spec, data)
    regated = spec.model_copy(update={"description": "other words", "gate": Gate(max_ece=0.5)})
    assert study_name(regated, data) == study_name(spec, data)
    linear = spec.model_copy(update={"booster": "gblinear"})
    assert study_name(linear, data) != study_name(spec, data)
    # Only the active space counts: a new linear space leaves a tree model's study alone.
    relinear = spec.model_copy(update={"linear_space": {}})
    assert study_name(relinear, data) == study_name(spec, data)


def test_a_linear_model_trains_registers_and_scores_probabilities(job):
    """Reactivation's spec asks for a linear booster when positives are few, as in the tiny
    world: the same job tunes, calibrates, logs and registers it, and the pyfunc model applies
    the shipped input transform."""
    config, raw, store, cutoffs, as_of = job
    result = train(SPECS["reactivation"], config, raw, store, cutoffs, as_of)
    assert result.trials == 3 and np.isfinite(result.metrics["oracle_roc_auc"])
    assert np.isfinite(result.metrics["lead_roc_auc"])  # the tiny world has few returns
    client = MlflowClient(config.tracking_uri, registry_uri=config.tracking_uri)
    assert client.get_run(result.run_id).data.params["booster"] == "gblinear"
    importance = client.download_artifacts(result.run_id, "feature_importance.csv")
    assert len(pd.read_csv(importance)) > 10
    mlflow.set_tracking_uri(config.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/reactivation/{result.version}")
    example = model.input_example
    scores = np.asarray(model.predict(example))
    assert ((scores > 0) & (scores < 1)).all() and len(np.unique(scores)) > 1
    assert "lead_fit_score" in example.columns  # the features, not the transformed inputs


def test_single_class_label_registers_nothing(job, tmp_path: Path):
    config, raw, store, cutoffs, as_of = job
    never = raw["referrals"].iloc[0:0]
    broken = {**raw, "referrals": never}
    with pytest.raises(DatasetError, match="single class"):
        train(SPECS["referral"], config, broken, store, cutoffs, as_of)
    client = MlflowClient(config.tracking_uri, registry_uri=config.tracking_uri)
    assert client.search_registered_models() == []


def test_unreachable_study_storage_is_named(job):
    config, raw, store, cutoffs, as_of = job
    bad = JobConfig(**{**config.__dict__, "study_storage": "postgresql://nobody@127.0.0.1:1/x"})
    with pytest.raises(StorageError, match="127.0.0.1:1"):
        train(SPECS["churn"], bad, raw, store, cutoffs, as_of)
    assert (
        MlflowClient(
            config.tracking_uri, registry_uri=config.tracking_uri
        ).search_registered_models()
        == []
    )


def test_a_users_own_model_is_only_a_spec(job, tmp_path: Path):
    config, raw, store, cutoffs, as_of = job
    population = labels.active_customers(raw, cutoffs)
    # e.g. a lapse definition of the user's own, kept in a table rather than a function
    own = labels.churn(raw, population, 2)[["customer_id", "cutoff", "label"]]
    table = tmp_path / "lapse_labels.parquet"
    own.to_parquet(table)
    spec_file = tmp_path / "specs.toml"
    spec_file.write_text(
        f"""
[models.lapse_60d]
description = "Lapse within 60 days, from a label table of our own"
feature_service = "churn_v1"
population = "label_table"
label = "table"
label_table = "{table}"
horizon_months = 2
gate = {{ primary_floor = 0.5 }}
"""
    )
    spec = load_specs(spec_file)["lapse_60d"]
    result = train(spec, config, raw, store, cutoffs, as_of)
    assert result.name == "lapse_60d" and "oracle_roc_auc" not in result.metrics
    assert MlflowClient(config.tracking_uri, registry_uri=config.tracking_uri).get_registered_model(
        "lapse_60d"
    )


def test_a_trial_that_never_sent_a_heartbeat_is_failed_and_queued_again(tmp_path: Path):
    """A worker killed between creating a trial and its first heartbeat: Optuna alone would
    leave that trial RUNNING for ever and the study waiting on it."""
    import time

    import optuna

    from training.tuning import Heartbeat, StudyPlan, open_study

    plan = StudyPlan(
        SPECS["churn"], f"sqlite:///{tmp_path / 'optuna.db'}", "silent", 3, 0, Heartbeat(1, 1)
    )
    study = open_study(plan)
    silent = study.ask()  # RUNNING, and no heartbeat thread ever started for it
    optuna.storages.fail_stale_trials(study)
    assert study.trials[silent.number].state.name == "RUNNING"  # still within the grace period
    time.sleep(1.5)
    optuna.storages.fail_stale_trials(study)
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "WAITING"], states  # failed, and its parameters queued again
