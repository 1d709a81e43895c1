"""Optuna tuning of the XGBoost hyper-parameters of one spec (TPE, seeded, median pruning and
early stopping), persisted in the Optuna storage so an interrupted study resumes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from training.model import BoostedModel
from training.specs import ModelSpec

log = logging.getLogger(__name__)
EARLY_STOPPING = 30
REPORT_EVERY = 10

TrialCallback = Callable[[int, dict[str, Any], float, int], None]


class StorageError(ConnectionError):
    """The Optuna storage cannot be reached."""


@dataclass(frozen=True)
class TuningResult:
    """The best trial of a study and how many trials it holds."""

    params: dict[str, Any]
    num_rounds: int
    value: float
    trials: int
    study_name: str


class _Pruning(xgb.callback.TrainingCallback):
    """Reports the validation loss to Optuna every few rounds; stops hopeless trials."""

    def __init__(self, trial: optuna.Trial, metric: str, sign: float) -> None:
        self.trial, self.metric, self.sign = trial, metric, sign

    def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
        if epoch % REPORT_EVERY == 0:
            value = evals_log["valid"][self.metric][-1]
            self.trial.report(self.sign * value, step=epoch)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"pruned at round {epoch}")
        return False


def sample_params(trial: optuna.Trial, spec: ModelSpec) -> dict[str, Any]:
    """One point of the spec's search space."""
    params: dict[str, Any] = {}
    for name, p in spec.search_space.items():
        if p.integer:
            params[name] = trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
        else:
            params[name] = trial.suggest_float(name, p.low, p.high, log=p.log)
    return params


def validation_score(spec: ModelSpec, y: np.ndarray, pred: np.ndarray) -> float:
    """The spec's primary metric on validation rows (AUC-style: higher is better)."""
    if spec.primary_metric == "mae":
        return float(np.mean(np.abs(pred - y)))
    if spec.primary_metric == "pr_auc":
        from sklearn.metrics import average_precision_score

        return float(average_precision_score(y, pred))
    return float(roc_auc_score(y, pred))


def open_study(spec: ModelSpec, storage: str, study_name: str, seed: int) -> optuna.Study:
    """Create or resume the study `study_name` in `storage`."""
    try:
        return optuna.create_study(
            study_name=study_name,
            storage=storage,
            load_if_exists=True,
            direction="maximize" if spec.higher_is_better else "minimize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=20),
        )
    except Exception as exc:  # SQLAlchemy raises many types for an unreachable database
        raise StorageError(f"Optuna storage {storage} cannot be reached: {exc}") from exc


def tune(
    spec: ModelSpec,
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
    trials: int,
    storage: str,
    study_name: str,
    seed: int,
    on_trial: TrialCallback | None = None,
) -> TuningResult:
    """Run the study until it holds `trials` finished trials; return its best trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(spec, storage, study_name, seed)
    done = [t for t in study.trials if t.state.is_finished()]
    remaining = max(0, trials - len(done))
    if done:
        log.info("%s: resuming study %s (%d trials done)", spec.name, study_name, len(done))
    base = BoostedModel(objective=spec.objective, seed=seed)._xgb_params()
    metric = base["eval_metric"]
    dtrain = xgb.DMatrix(X_train.to_numpy(np.float64), label=y_train)
    dvalid = xgb.DMatrix(X_valid.to_numpy(np.float64), label=y_valid)
    sign = 1.0 if not spec.higher_is_better else -1.0  # report losses in the study's direction

    def objective(trial: optuna.Trial) -> float:
        params = {**base, **sample_params(trial, spec)}
        booster = xgb.train(
            params,
            dtrain,
            num_boost_round=spec.max_rounds,
            evals=[(dvalid, "valid")],
            early_stopping_rounds=EARLY_STOPPING,
            callbacks=[_Pruning(trial, metric, sign)],
            verbose_eval=False,
        )
        rounds = int(booster.best_iteration) + 1
        pred = booster.predict(dvalid, iteration_range=(0, rounds))
        value = validation_score(spec, y_valid, pred)
        trial.set_user_attr("num_rounds", rounds)
        log.info(
            "%s trial %d: valid %s %.4f (%d rounds)",
            spec.name, trial.number, spec.primary_metric, value, rounds,
        )  # fmt: skip
        if on_trial:
            on_trial(trial.number, sample_params_of(trial), value, rounds)
        return value

    if remaining:
        study.optimize(objective, n_trials=remaining, gc_after_trial=False)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"model {spec.name}: every trial of study {study_name} failed")
    best = study.best_trial
    return TuningResult(
        params=dict(best.params),
        num_rounds=int(best.user_attrs.get("num_rounds", spec.max_rounds)),
        value=float(best.value if best.value is not None else float("nan")),
        trials=len([t for t in study.trials if t.state.is_finished()]),
        study_name=study_name,
    )


def sample_params_of(trial: optuna.Trial) -> dict[str, Any]:
    return dict(trial.params)
