"""Optuna tuning of the XGBoost hyper-parameters of one spec (TPE, seeded, median pruning and
early stopping), persisted in the Optuna storage so an interrupted study resumes.

With `workers > 1` the study runs in that many processes at once; the storage is the only thing
they share, so the same study can also take workers on other machines (PostgreSQL storage).
Trials carry a heartbeat: the trial of a worker that was killed is marked failed after the
grace period and queued again, and the study still ends with exactly the requested number of
finished trials.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import warnings
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import optuna
import pandas as pd
import xgboost as xgb
from optuna.trial import TrialState
from sklearn.metrics import roc_auc_score
from sqlalchemy.pool import NullPool

from training import linear
from training.model import BoostedModel
from training.specs import ModelSpec

log = logging.getLogger(__name__)
EARLY_STOPPING = 30
REPORT_EVERY = 10
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
OPEN_ATTEMPTS = 3


class StorageError(ConnectionError):
    """The Optuna storage cannot be reached."""


class _Surplus(Exception):
    """The study already holds (or is running) the trials asked for; this one is not needed."""


@dataclass(frozen=True)
class Heartbeat:
    """How often a running trial says it is alive, and how long silence means it died."""

    interval: int = HEARTBEAT_SECONDS
    grace: int = GRACE_SECONDS


@dataclass(frozen=True)
class StudyPlan:
    """Which study to run and how far: what every process that works on it must agree on."""

    spec: ModelSpec
    storage: str
    study_name: str
    trials: int
    seed: int
    heartbeat: Heartbeat | None = None


@dataclass(frozen=True)
class TuningResult:
    """The best trial of a study and how many trials it holds."""

    params: dict[str, Any]
    num_rounds: int
    value: float
    trials: int
    study_name: str
    history: tuple[tuple[int, dict[str, Any], float, int], ...] = ()  # finished trials


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
    for name, p in spec.space.items():
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


class _HeartbeatStorage(optuna.storages.RDBStorage):
    """An RDB storage that also counts as stale a running trial that never sent a heartbeat.

    Optuna creates a trial (RUNNING) and only then starts the thread that records its first
    heartbeat; a worker killed in between leaves a RUNNING trial without a heartbeat row, which
    Optuna's own check skips for ever, and the study would wait on it for ever."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        grace = self.grace_period or 2 * (self.heartbeat_interval or HEARTBEAT_SECONDS)
        started_before = datetime.now() - timedelta(seconds=grace)
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        silent = [
            t._trial_id
            for t in running
            if t._trial_id not in stale
            and t.datetime_start is not None
            and t.datetime_start < started_before
            and not self._has_heartbeat(t._trial_id)
        ]
        return stale + silent

    def _has_heartbeat(self, trial_id: int) -> bool:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(self.scoped_session) as session:
            return models.TrialHeartbeatModel.where_trial_id(trial_id, session) is not None


def study_storage(url: str, heartbeat: Heartbeat | None = None) -> Any:
    """The storage object for `url`: an RDB storage with trial heartbeats for database URLs
    (SQLite, PostgreSQL, MySQL), anything else as Optuna reads it."""
    if "://" not in url:
        return url
    beat = heartbeat or Heartbeat()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # No pool: every study object would otherwise keep its own idle connections open,
        # and a long process (a test session, a scheduler) opens many studies.
        return _HeartbeatStorage(
            url,
            engine_kwargs={"poolclass": NullPool},
            heartbeat_interval=beat.interval,
            grace_period=beat.grace,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=3
            ),
        )


def open_study(plan: StudyPlan) -> optuna.Study:
    """Create or resume the plan's study. Workers that start together on a fresh database race
    to create Optuna's tables; the loser sees an integrity error and simply tries again."""
    spec = plan.spec
    for attempt in range(1, OPEN_ATTEMPTS + 1):
        try:
            return optuna.create_study(
                study_name=plan.study_name,
                storage=study_storage(plan.storage, plan.heartbeat),
                load_if_exists=True,
                direction="maximize" if spec.higher_is_better else "minimize",
                sampler=optuna.samplers.TPESampler(seed=plan.seed),
                pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=20),
            )
        except Exception as exc:  # SQLAlchemy raises many types for an unreachable database
            if attempt < OPEN_ATTEMPTS and _is_schema_race(exc):
                time.sleep(0.5 * attempt)
                continue
            raise StorageError(f"Optuna storage {plan.storage} cannot be reached: {exc}") from exc
    raise AssertionError("not reached")


def _is_schema_race(exc: BaseException) -> bool:
    """Another process created the same tables (or study) at the same moment."""
    from sqlalchemy.exc import IntegrityError

    while exc is not None:
        if isinstance(exc, IntegrityError) or "UniqueViolation" in type(exc).__name__:
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def run_trials(
    plan: StudyPlan,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    nthread: int = 2,
    worker: str = "",
    study: optuna.Study | None = None,
) -> int:
    """Run trials of the study until it holds `plan.trials` finished ones (counting the trials
    other workers are running). The loop of every worker, local or remote; returns the number
    of trials run here. `study` is the caller's open study (one storage per process)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec, trials = plan.spec, plan.trials
    X_train, y_train, X_valid, y_valid = arrays
    study = study or open_study(plan)
    base = BoostedModel(
        objective=spec.objective, seed=plan.seed, booster=spec.booster
    )._xgb_params()
    base["nthread"] = nthread
    metric = base["eval_metric"]
    dtrain = xgb.DMatrix(X_train, label=y_train)
    dvalid = xgb.DMatrix(X_valid, label=y_valid)
    sign = 1.0 if not spec.higher_is_better else -1.0  # report losses in the study's direction
    ran = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal ran
        taken = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        if sum(1 for t in taken if t.number < trial.number) >= trials:
            study.stop()
            raise _Surplus(f"study {plan.study_name} already has {trials} trials")
        ran += 1
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
        if worker:
            trial.set_user_attr("worker", worker)
        log.info(
            "%s trial %d%s: valid %s %.4f (%d rounds)",
            spec.name, trial.number, f" [worker {worker}]" if worker else "",
            spec.primary_metric, value, rounds,
        )  # fmt: skip
        return value

    def full(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Stop asking for trials once the finished and running ones make the count."""
        taken = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        if len(taken) >= trials:
            study.stop()

    if len(finished_trials(study)) < trials:
        study.optimize(
            objective, n_trials=trials, catch=(_Surplus,), callbacks=[full], gc_after_trial=False
        )
    return ran


def _worker_main(plan: StudyPlan, arrays: tuple, nthread: int, worker: str, level: int) -> None:
    """Entry point of a spawned worker process."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_trials(plan, arrays, nthread, worker)


def run_workers(
    plan: StudyPlan,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    workers: int,
) -> list[int | None]:
    """Run the study in `workers` fresh processes (spawned, so no OpenMP or database state is
    inherited) and wait for them; returns their exit codes. Each gets a share of the cores and
    its own sampler seed, so they do not propose the same points."""
    context = multiprocessing.get_context("spawn")
    nthread = max(1, (os.cpu_count() or 2) // workers)
    level = logging.getLogger().getEffectiveLevel()
    processes = []
    for i in range(workers):
        own = replace(plan, seed=plan.seed + i)
        args = (own, arrays, nthread, str(i + 1), level)
        process = context.Process(target=_worker_main, args=args, name=f"tune-{i + 1}")
        process.start()
        processes.append(process)
    for process in processes:
        process.join()
        if process.exitcode:
            log.warning("%s: tuning worker %s exited with %s", plan.spec.name, process.name,
                        process.exitcode)  # fmt: skip
    return [p.exitcode for p in processes]


def booster_arrays(
    spec: ModelSpec,
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the trials boost on: the features, or a linear booster's inputs (the transform
    learned on the training rows, as the refit learns it)."""
    train, valid = X_train.to_numpy(np.float64), X_valid.to_numpy(np.float64)
    if spec.booster == "gblinear":
        inputs = linear.fit_inputs(X_train)
        train, valid = linear.transform(inputs, train), linear.transform(inputs, valid)
    return train, np.asarray(y_train), valid, np.asarray(y_valid)


def tune(
    plan: StudyPlan,
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
    workers: int = 1,
    study: optuna.Study | None = None,
) -> TuningResult:
    """Run the study until it holds `plan.trials` finished trials (in this process, or in
    `workers` processes); return its best trial. Trials left undone by workers that died are
    run here. `study` is the plan's study if the caller has it open already."""
    spec, trials = plan.spec, plan.trials
    study = study or open_study(plan)
    done = len(finished_trials(study))
    if done:
        log.info("%s: resuming study %s (%d trials done)", spec.name, plan.study_name, done)
    arrays = booster_arrays(spec, X_train, y_train, X_valid, y_valid)
    if workers > 1 and done < trials:
        run_workers(plan, arrays, workers)
    beat = plan.heartbeat or Heartbeat()
    while (before := len(finished_trials(study))) < trials:
        ran = run_trials(plan, arrays, study=study)
        if len(finished_trials(study)) > before:
            continue
        if ran:
            raise RuntimeError(f"model {spec.name}: trials of study {plan.study_name} keep failing")
        # Other processes hold the remaining trials: wait until they finish, or until their
        # heartbeat goes stale and their trials are queued again for this process.
        time.sleep(beat.interval)
        optuna.storages.fail_stale_trials(study)
    return result_of(study, spec, plan.study_name)


def result_of(study: optuna.Study, spec: ModelSpec, study_name: str) -> TuningResult:
    """The best trial and the history of a study."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise RuntimeError(f"model {spec.name}: every trial of study {study_name} failed")
    best = study.best_trial
    history = tuple(
        (t.number, dict(t.params), float(t.value), int(t.user_attrs.get("num_rounds", 0)))
        for t in complete
        if t.value is not None
    )
    return TuningResult(
        params=dict(best.params),
        num_rounds=int(best.user_attrs.get("num_rounds", spec.max_rounds)),
        value=float(best.value if best.value is not None else float("nan")),
        trials=len(finished_trials(study)),
        study_name=study_name,
        history=history,
    )
