"""The one generic training job: spec -> Feast training set -> time split -> Optuna study ->
refit -> calibration on validation -> test evaluation next to the oracle -> MLflow run and a
registered model version. It never promotes anything (that is the registry's gate)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from training import tracking
from training.clv import BGNBD_FEATURES, bgnbd_predict, fit_bgnbd, naive_predict
from training.dataset import TrainingData, build_training_data
from training.evaluation import (
    classification_plots,
    evaluate,
    feature_ceiling,
    importance_plot,
    importance_tables,
    regression_plots,
    truth_for,
)
from training.metrics import expected_gap_text, expected_roc_auc, regression_metrics
from training.model import BoostedModel
from training.specs import ModelSpec
from training.tuning import StudyPlan, open_study, tune

log = logging.getLogger(__name__)
QUANTILES = np.linspace(0, 100, 101)
TRAIN_SAMPLE = 5000  # training rows logged with each version, for drift


@dataclass(frozen=True)
class JobConfig:
    """What the job needs from the outside, built from the settings by the CLI."""

    tracking_uri: str
    artifacts_dir: Path
    study_storage: str
    truth_dir: Path | None
    trials: int
    seed: int
    git_revision: str = "unknown"
    reuse: bool = False  # return an existing version trained on the same data and code
    workers: int = 1  # Optuna worker processes on the one study
    join: bool = False  # only add trials to the shared study; no refit, nothing registered
    dask_scheduler: str | None = None  # refit through xgboost.dask: 'local' or an address
    dask_workers: int = 2  # worker processes of a local Dask cluster


@dataclass
class TrainResult:
    """What one model's job produced."""

    name: str
    version: str
    trials: int
    metrics: dict[str, float]
    seconds: float
    run_id: str
    model_kind: str = "xgboost"
    notes: list[str] = field(default_factory=list)

    @property
    def primary(self) -> float:
        return self.metrics.get("roc_auc", self.metrics.get("mae", float("nan")))

    @property
    def oracle(self) -> float:
        return self.metrics.get("oracle_roc_auc", self.metrics.get("oracle_mae", float("nan")))

    @property
    def ceiling(self) -> float:
        """The feature ceiling's test AUC (NaN without ground truth or for a regression)."""
        return self.metrics.get("ceiling_roc_auc", float("nan"))

    @property
    def expected_gap(self) -> str:
        """The oracle's lead in expected AUC, +- the label noise of one test set's realised gap
        ('-' without ground truth or for a regression)."""
        return expected_gap_text(self.metrics)


def study_name(spec: ModelSpec, data: TrainingData) -> str:
    """Same spec and data -> same study, so an interrupted job resumes where it stopped; a
    change to what shapes the trials (objective, booster, metric, the booster's search space,
    round cap) starts a study of its own, while a new description or gate keeps the study."""
    shape = spec.model_dump(include={"objective", "booster", "primary_metric", "max_rounds"})
    shape["space"] = {k: v.model_dump() for k, v in spec.space.items()}
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()
    return f"{spec.name}-{data.fingerprint[:16]}-{digest[:8]}"


def train(
    spec: ModelSpec,
    config: JobConfig,
    raw: dict[str, pd.DataFrame],
    store: Any,
    cutoffs: list[pd.Timestamp],
    as_of: pd.Timestamp,
) -> TrainResult:
    """Train, evaluate, log and register one model."""
    started = time.perf_counter()
    data = build_training_data(spec, raw, store, cutoffs, as_of)
    X_tr, y_tr, keys_tr = data.rows("train")
    if spec.booster == "auto":
        positives = int(np.sum(y_tr > 0))
        spec = spec.resolved(positives)
        log.info("%s: %d positive training labels -> booster %s",
                 spec.name, positives, spec.booster)  # fmt: skip
    X_va, y_va, _ = data.rows("valid")
    X_te, y_te, keys_te = data.rows("test")
    name = study_name(spec, data)
    plan = StudyPlan(spec, config.study_storage, name, config.trials, config.seed)
    study = open_study(plan)  # fail early on a bad storage, before anything is logged
    log.info(
        "%s: %d train / %d valid / %d test rows (%s)",
        spec.name, len(y_tr), len(y_va), len(y_te), data.split.describe(),
    )  # fmt: skip
    if config.join:  # a worker on another machine: add trials to the shared study, no more
        joined = tune(plan, X_tr, y_tr, X_va, y_va, workers=config.workers, study=study)
        metrics = {f"valid_{spec.primary_metric}": joined.value}
        seconds = time.perf_counter() - started
        note = f"joined study {name}: {joined.trials} trials"
        return TrainResult(spec.name, "", joined.trials, metrics, seconds, "", notes=[note])
    experiment = tracking.configure(config.tracking_uri, config.artifacts_dir, spec.name)
    window = f"{data.split.train[0].date()}..{data.split.train[-1].date()}"
    test_window = f"{data.split.test[0].date()}..{data.split.test[-1].date()}"
    tags = {
        "model": spec.name,
        "feature_service": spec.feature_service,
        "training_window": window,
        "test_window": test_window,
        "data_fingerprint": data.fingerprint,
        "git_revision": config.git_revision,
        "study": name,
    }
    if config.reuse and not config.git_revision.endswith("-dirty"):
        found = tracking.existing_version(spec.name, tags)
        if found:
            version, run_id, metrics = found
            log.info("%s: version %s was trained on the same data and code; reusing it",
                     spec.name, version)  # fmt: skip
            return TrainResult(spec.name, version, 0, metrics, 0.0, run_id, notes=["reused"])
    with tracking.parent_run(experiment, f"train-{spec.name}", tags) as run:
        tracking.log_params(
            {
                "feature_service": spec.feature_service,
                "horizon_months": spec.horizon_months,
                "objective": spec.objective,
                "booster": spec.booster,
                "primary_metric": spec.primary_metric,
                "calibration": spec.calibration,
                "split": data.split.describe(),
                "train_rows": len(y_tr),
                "valid_rows": len(y_va),
                "test_rows": len(y_te),
                "features": len(X_tr.columns),
                "trials_requested": config.trials,
            }
        )
        result = tune(plan, X_tr, y_tr, X_va, y_va, workers=config.workers, study=study)
        for number, params, value, rounds in result.history:
            tracking.log_trial(number, params, value, rounds, spec.primary_metric)
        tracking.log_params({f"best_{k}": v for k, v in result.params.items()})
        tracking.log_params({"best_num_rounds": result.num_rounds, "trials": result.trials})
        model = BoostedModel(
            objective=spec.objective,
            params=result.params,
            num_rounds=result.num_rounds,
            calibration=spec.calibration,
            seed=config.seed,
            booster=spec.booster,
        )
        with _trainer(config) as trainer:
            model.fit(X_tr, y_tr, X_va, y_va, trainer=trainer)
        tracking.log_params({"trainer": "xgboost.dask" if trainer else "xgboost"})
        pred = model.predict(X_te)
        # The truth of every row, read once: the test rows' for the oracle, the others' for
        # the feature ceiling.
        truth_all = truth_for(spec, data.keys, config.truth_dir)
        test = data.part == "test"
        truth = None if truth_all is None else truth_all[test].reset_index(drop=True)
        metrics = evaluate(spec, keys_te, y_te, pred, truth)
        if truth_all is not None and "oracle_roc_auc" in metrics:
            metrics.update(_ceiling(spec, data, X_te, y_te, truth_all, metrics["oracle_roc_auc"]))
        kind = "xgboost"
        notes: list[str] = []
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            meta_extra: dict[str, Any] = {
                "model": spec.name,
                "feature_service": spec.feature_service,
            }
            if spec.objective == "regression":
                kind, pred, metrics, extra = _compare_clv(
                    spec, data, model, pred, y_te, metrics, truth, folder / "plots", config.seed
                )
                notes.append(extra.pop("note"))
                meta_extra.update(extra)
            else:
                oracle = truth["probability"].to_numpy(float) if truth is not None else None
                classification_plots(y_te, pred, oracle, folder / "plots")
            contributions = model.contributions(X_te)
            table = importance_tables(model.feature_names_, model.importance(), contributions)
            importance_plot(table, folder / "plots")
            tracking.log_folder(folder / "plots", "plots")
            tracking.log_table(table, "feature_importance.csv")
            tracking.log_table(
                pd.concat(
                    [keys_te, X_te.reset_index(drop=True), pd.Series(y_te, name="label")], axis=1
                ),
                "test_set.parquet",
            )
            # A sample of the training rows: the reference of the retrain drift report.
            sample = np.random.default_rng(config.seed).permutation(len(X_tr))[:TRAIN_SAMPLE]
            tracking.log_table(
                pd.concat([keys_tr.iloc[sample].reset_index(drop=True),
                           X_tr.iloc[sample].reset_index(drop=True)], axis=1),
                "train_sample.parquet",
            )  # fmt: skip
            tracking.log_metrics(metrics)
            tracking.log_json(metrics, "test_metrics.json")
            meta_extra["score_quantiles"] = np.percentile(pred, QUANTILES).tolist()
            meta_extra["test_window"] = test_window
            model_folder = folder / "model"
            if kind == "bgnbd":
                model_folder.mkdir()
                (model_folder / "model.json").write_text(json.dumps(meta_extra, indent=1))
            else:
                model.save(model_folder, extra={"kind": "xgboost", **meta_extra})
            version_tags = {
                **tags,
                "model_kind": kind,
                "primary_metric": spec.primary_metric,
                **{f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()},
            }
            version = tracking.log_and_register(
                model_folder, X_te.head(5), pred[:5], spec.name, version_tags
            )
    seconds = time.perf_counter() - started
    log.info("%s: registered version %s in %.0f s", spec.name, version, seconds)
    return TrainResult(
        spec.name, version, result.trials, metrics, seconds, run.info.run_id, kind, notes
    )


def _ceiling(
    spec: ModelSpec,
    data: TrainingData,
    X_te: pd.DataFrame,
    y_te: np.ndarray,
    truth_all: pd.DataFrame,
    oracle_auc: float,
) -> dict[str, float]:
    """The feature ceiling (fitted on the train and validation rows' true probabilities,
    `truth_all` being aligned to every row of `data`; scored on the test rows `X_te`) and the
    oracle's lead over it."""
    fit = data.part != "test"
    probability = truth_all["probability"].to_numpy(float)
    scores = feature_ceiling(data.features[fit], probability[fit], X_te)
    ceiling = float(roc_auc_score(y_te, scores))
    log.info("%s: feature ceiling %.4f (oracle %.4f)", spec.name, ceiling, oracle_auc)
    expected = expected_roc_auc(scores, probability[~fit])
    return {
        "ceiling_roc_auc": ceiling,
        "ceiling_gap_roc_auc": oracle_auc - ceiling,
        "ceiling_expected_roc_auc": expected,
    }


@contextlib.contextmanager
def _trainer(config: JobConfig) -> Iterator[Any]:
    """A Dask trainer when the job is configured for a Dask cluster, else None."""
    if not config.dask_scheduler:
        yield None
        return
    from training.distributed import DaskTrainer, dask_client

    with dask_client(config.dask_scheduler, workers=config.dask_workers) as client:
        yield DaskTrainer(client)


def _compare_clv(
    spec: ModelSpec,
    data: TrainingData,
    model: BoostedModel,
    pred: np.ndarray,
    y_te: np.ndarray,
    metrics: dict[str, float],
    truth: pd.DataFrame | None,
    plots: Path,
    seed: int,
) -> tuple[str, np.ndarray, dict[str, float], dict[str, Any]]:
    """XGBoost vs BG/NBD + Gamma-Gamma vs the naive baseline on the same test rows; the better
    of the first two (by MAE) becomes the candidate."""
    X_tr, _, keys_tr = data.rows("train")
    X_te, _, _ = data.rows("test")
    latest = (keys_tr["cutoff"] == keys_tr["cutoff"].max()).to_numpy()
    try:
        meta = fit_bgnbd(X_tr.loc[latest, BGNBD_FEATURES], seed)
    except ValueError as exc:  # the comparator failing must not stop the model it checks
        log.warning("clv: BG/NBD + Gamma-Gamma not fitted (%s); XGBoost is the candidate", exc)
        meta, probabilistic = {"kind": "bgnbd", "error": str(exc)}, None
    else:
        meta["features"] = list(X_te.columns)
        probabilistic = bgnbd_predict(meta, X_te)
    naive = naive_predict(X_te)
    predictions = {"xgboost": pred, "bgnbd + gamma-gamma": probabilistic, "naive": naive}
    fitted = {name: p for name, p in predictions.items() if p is not None}
    scores = {name.split()[0]: regression_metrics(y_te, p) for name, p in fitted.items()}
    out = dict(metrics)
    for name in ("bgnbd", "naive"):
        out.update({f"{name}_{k}": v for k, v in scores.get(name, {}).items() if k != "rows"})
    bgnbd_mae = scores["bgnbd"]["mae"] if "bgnbd" in scores else float("nan")
    winner = (
        "bgnbd" if np.isfinite(bgnbd_mae) and bgnbd_mae < scores["xgboost"]["mae"] else "xgboost"
    )
    chosen = probabilistic if winner == "bgnbd" and probabilistic is not None else pred
    if winner == "bgnbd":
        out.update(scores["bgnbd"])
        if truth is not None:
            out["oracle_mae"] = metrics.get("oracle_mae", float("nan"))
    out["baseline_mae"] = scores["naive"]["mae"]
    regression_plots(y_te, fitted, plots)
    bgnbd_text = f"{bgnbd_mae:.1f}" if "bgnbd" in scores else f"not fitted ({meta['error']})"
    note = (
        f"clv: xgboost MAE {scores['xgboost']['mae']:.1f}, BG/NBD+GG {bgnbd_text},"
        f" naive {scores['naive']['mae']:.1f} -> {winner}"
    )
    log.info(note)
    extra = {"note": note, **(meta if winner == "bgnbd" else {})}
    return winner, chosen, out, extra
