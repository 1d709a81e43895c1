"""Benchmarks of the scale path (`python -m bench scale [--quick]`).

1. Online lookup of every feature one customer needs across the customer models, p50/p99 over
   2,000 calls, on Redis (registry in PostgreSQL) next to SQLite (file registry), same data.
2. Optuna trials per minute on one study with 1 and with 2 worker processes (PostgreSQL
   storage), on the churn training set.
3. The final XGBoost fit single-process vs `xgboost.dask` on a local cluster, on the churn
   training set of a large world (scale 10 unless --quick), with fit time, test AUC and the
   batch prediction of every training row on both.

Homes: BENCH_HOME (a built default-size home; else one is built in /tmp) for parts 1 and 2,
BENCH_DASK_HOME (a built home, e.g. scale 10) for part 3 (else the part-1 home with --quick,
or a scale-10 home built in /tmp). Needs PostgreSQL and Redis on 127.0.0.1 for parts 1-2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import run_callable, run_command, table

CLV = Path(sys.executable).with_name("clv")
SERVICES = ["churn_v1", "expansion_v1", "referral_v1", "clv_v1"]
CALLS, WARMUP = 2000, 100
OPTUNA_TRIALS = 12
DASK_PARAMS = {"learning_rate": 0.08, "max_depth": 5, "min_child_weight": 5.0, "subsample": 0.9}
DASK_ROUNDS = 300
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/{}"


def _reachable(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _database(action: str, name: str) -> None:
    sql = f'CREATE DATABASE "{name}"' if action == "create" else f'DROP DATABASE "{name}"'
    subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-c", sql], check=True)


def _settings(home: str, **engines: Any) -> Any:
    from clv.settings import Settings

    return Settings(home=Path(home), **engines)


def build_home(home: Path, scale: float) -> dict[str, float]:
    """simulate + features build/apply/materialize through the CLI; seconds per step."""
    seconds = {}
    env = ["env", f"CLV_HOME={home}", f"CLV_SCALE={scale:g}", "FEAST_USAGE=False"]
    for step in (["simulate"], ["features", "build"], ["features", "apply"],
                 ["features", "materialize"]):  # fmt: skip
        print(f"  scale {scale:g}: clv {' '.join(step)} ...", flush=True)
        seconds[" ".join(step)] = run_command([*env, str(CLV), *step]).seconds
    return seconds


# ---- part 1: online lookups ---------------------------------------------------------------
def prepare_redis(home: str, registry_url: str, project: str) -> dict[str, Any]:
    """Apply and materialize the home's features into Redis with a PostgreSQL registry."""
    from clv.compose import store_config
    from features.store import apply, built_cutoffs, materialize, open_store

    settings = _settings(home, online_store="redis", feast_registry="sql",
                         feast_registry_url=registry_url, feast_project=project)  # fmt: skip
    store = open_store(store_config(settings))
    started = time.perf_counter()
    apply(store, settings.features_dir)
    applied = time.perf_counter() - started
    materialize(store, settings.features_dir, built_cutoffs(settings.features_dir)[-1])
    return {"apply_s": applied, "materialize_s": time.perf_counter() - started - applied}


def teardown_redis(home: str, registry_url: str, project: str) -> dict[str, Any]:
    from clv.compose import store_config
    from features.store import open_store

    settings = _settings(home, online_store="redis", feast_registry="sql",
                         feast_registry_url=registry_url, feast_project=project)  # fmt: skip
    open_store(store_config(settings)).teardown()
    return {}


def lookup_latency(home: str, engines: dict[str, Any]) -> dict[str, Any]:
    """p50/p99 of the serving path's online lookup of one customer, different ids per call."""
    import pandas as pd

    from clv.compose import store_config
    from features.store import OnlineReader, online_refs, open_store

    settings = _settings(home, **engines)
    store = open_store(store_config(settings))
    customers = pd.read_parquet(settings.raw_dir / "customers.parquet")
    ids = customers.loc[customers["status"] == "active", "customer_id"].tolist()
    lookup = OnlineReader(
        store, online_refs(store, SERVICES), "customer_id", "customer_directory"
    ).lookup
    rng = np.random.default_rng(0)
    for i in rng.choice(len(ids), WARMUP):
        lookup([ids[i]])
    times = []
    for i in rng.choice(len(ids), CALLS):
        started = time.perf_counter()
        lookup([ids[i]])
        times.append(time.perf_counter() - started)
    ms = np.asarray(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "calls": CALLS}  # fmt: skip


# ---- part 2: Optuna workers -----------------------------------------------------------------
def _churn_data(home: str) -> Any:
    from clv.compose import store_config, world_now
    from features.pipeline import read_raw
    from features.store import built_cutoffs, open_store
    from features.validation import validate_raw
    from training.dataset import build_training_data
    from training.specs import SPECS

    settings = _settings(home)
    raw = read_raw(settings.raw_dir)
    as_of = validate_raw(raw, world_now(settings))
    store = open_store(store_config(settings))
    return build_training_data(
        SPECS["churn"], raw, store, built_cutoffs(settings.features_dir), as_of
    )


def optuna_rate(home: str, storage: str, workers: int, trials: int) -> dict[str, Any]:
    """Trials per minute of one fresh churn study run by `workers` processes."""
    from training.specs import SPECS
    from training.tuning import StudyPlan, tune

    data = _churn_data(home)
    X_tr, y_tr, _ = data.rows("train")
    X_va, y_va, _ = data.rows("valid")
    started = time.perf_counter()
    plan = StudyPlan(SPECS["churn"], storage, f"bench-{workers}-{uuid.uuid4().hex[:6]}", trials, 1)
    result = tune(plan, X_tr, y_tr, X_va, y_va, workers=workers)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "trials": result.trials, "per_minute": result.trials / seconds * 60,
            "train_rows": len(y_tr), "best_valid_auc": result.value}  # fmt: skip


# ---- part 3: Dask ----------------------------------------------------------------------------
def dask_fit(home: str, mode: str, workers: int = 2) -> dict[str, Any]:
    """Fit churn with fixed parameters single-process or on a local Dask cluster."""
    from sklearn.metrics import roc_auc_score

    from training.model import BoostedModel

    data = _churn_data(home)
    X_tr, y_tr, _ = data.rows("train")
    X_va, y_va, _ = data.rows("valid")
    X_te, y_te, _ = data.rows("test")
    model = BoostedModel(params=DASK_PARAMS, num_rounds=DASK_ROUNDS, seed=1)
    out: dict[str, Any] = {"train_rows": len(y_tr), "features": X_tr.shape[1]}
    if mode == "single":
        started = time.perf_counter()
        model.fit(X_tr, y_tr, X_va, y_va)
        out["fit_s"] = time.perf_counter() - started
        started = time.perf_counter()
        model.raw_predict(X_tr)
        out["predict_s"] = time.perf_counter() - started
    else:
        from training.distributed import DaskTrainer, dask_client

        started = time.perf_counter()
        with dask_client("local", workers=workers) as client:
            out["cluster_s"] = time.perf_counter() - started
            trainer = DaskTrainer(client)
            started = time.perf_counter()
            model.fit(X_tr, y_tr, X_va, y_va, trainer=trainer)
            out["fit_s"] = time.perf_counter() - started
            started = time.perf_counter()
            trainer.predict(model.booster_, X_tr[model.feature_names_].to_numpy(np.float64))
            out["predict_s"] = time.perf_counter() - started
    out["test_auc"] = float(roc_auc_score(y_te, model.predict(X_te)))
    return out


# ---- driver ----------------------------------------------------------------------------------
def _child(label: str, function: Any, **kwargs: Any) -> dict[str, Any]:
    print(f"{label} ...", flush=True)
    try:
        run = run_callable(function, **kwargs)
    except RuntimeError as exc:
        print(f"  FAILED: {exc}", flush=True)
        return {"error": str(exc)[-2000:]}
    print(f"  {run.process_seconds:.1f} s, {run.peak_rss_mb:.0f} MB peak RSS", flush=True)
    return {**run.result, "process_seconds": run.process_seconds, "peak_rss_mb": run.peak_rss_mb}


def _home(variable: str, scale: float, made: list[Path]) -> tuple[Path, dict[str, float]]:
    if os.environ.get(variable):
        return Path(os.environ[variable]), {}
    home = Path(tempfile.mkdtemp(prefix=f"bench-scale-s{scale:g}-", dir="/tmp"))
    made.append(home)
    return home, build_home(home, scale)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not (_reachable(5432) and _reachable(6379)):
        raise RuntimeError("PostgreSQL and Redis must run on 127.0.0.1 for this benchmark")
    made: list[Path] = []
    results: dict[str, Any] = {}
    tables = []
    try:
        home, built = _home("BENCH_HOME", 1.0, made)
        results["home"] = {"path": str(home), "built_s": built}
        tag = uuid.uuid4().hex[:8]
        registry, studies = f"clv_bench_registry_{tag}", f"clv_bench_optuna_{tag}"
        project = f"bench{tag}"
        _database("create", registry)
        _database("create", studies)
        try:
            results["redis_load"] = _child("materialize into Redis", prepare_redis,
                                           home=str(home), registry_url=PG.format(registry),
                                           project=project)  # fmt: skip
            engines = {
                "sqlite": {},
                "redis": {"online_store": "redis", "feast_registry": "sql",
                          "feast_registry_url": PG.format(registry), "feast_project": project},
            }  # fmt: skip
            lookups = {
                name: _child(f"lookups on {name}", lookup_latency, home=str(home), engines=e)
                for name, e in engines.items()
            }
            _child("remove the Redis keys", teardown_redis, home=str(home),
                   registry_url=PG.format(registry), project=project)  # fmt: skip
            results["lookups"] = lookups
            tables.append(table(
                f"Online lookup of one customer for {', '.join(SERVICES)}: {CALLS} calls",
                ["online store", "registry", "p50 ms", "mean ms", "p99 ms"],
                [[name, "PostgreSQL" if name == "redis" else "file",
                  r.get("p50_ms"), r.get("mean_ms"), r.get("p99_ms")]
                 for name, r in lookups.items()],
            ))  # fmt: skip
            trials = 4 if args.quick else OPTUNA_TRIALS
            rates = {w: _child(f"optuna, {w} worker(s)", optuna_rate, home=str(home),
                               storage=PG.format(studies), workers=w, trials=trials)
                     for w in (1, 2)}  # fmt: skip
            results["optuna"] = rates
            tables.append(table(
                f"Optuna: one churn study of {trials} trials in PostgreSQL "
                f"({rates[1].get('train_rows', '?')} training rows)",
                ["workers", "seconds", "trials", "trials/min"],
                [[w, r.get("seconds"), r.get("trials"), r.get("per_minute")]
                 for w, r in rates.items()],
            ))  # fmt: skip
        finally:
            _database("drop", registry)
            _database("drop", studies)
        if args.quick and not os.environ.get("BENCH_DASK_HOME"):
            big = home
        else:
            big, built = _home("BENCH_DASK_HOME", 10.0, made)
            results["dask_home"] = {"path": str(big), "built_s": built}
        fits = {mode: _child(f"fit ({mode})", dask_fit, home=str(big), mode=mode)
                for mode in ("single", "dask")}  # fmt: skip
        results["dask"] = fits
        tables.append(table(
            f"Churn fit, {DASK_ROUNDS} rounds of fixed parameters, "
            f"{fits['single'].get('train_rows', '?')} training rows: single process (2 threads) "
            "vs local Dask cluster (2 workers x 1 thread)",
            ["trainer", "cluster start s", "fit s", "predict all s", "test AUC", "peak RSS MB"],
            [[mode, r.get("cluster_s"), r.get("fit_s"), r.get("predict_s"), r.get("test_auc"),
              r.get("peak_rss_mb")] for mode, r in fits.items()],
        ))  # fmt: skip
    finally:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)
    return {**results, "tables": tables}
