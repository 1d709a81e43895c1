"""The scale path against real servers: Feast on Redis with its registry in PostgreSQL, an
MLflow tracking server on PostgreSQL with served artifacts, Optuna studies in PostgreSQL shared
by worker processes, XGBoost on a Dask cluster, and a two-worker scoring service that hot-swaps.

Tests marked `services` need PostgreSQL and Redis on 127.0.0.1. Without them they skip, saying
so, except on CI (CI set), where a missing server is a failure. Every test removes the
databases and Redis keys it creates.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/{}"
REDIS = "127.0.0.1:6379"


def _reachable(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def servers() -> None:
    missing = [name for name, port in (("PostgreSQL", 5432), ("Redis", 6379))
               if not _reachable(port)]  # fmt: skip
    if missing:
        why = f"{' and '.join(missing)} not running on 127.0.0.1"
        if os.environ.get("CI"):
            pytest.fail(f"{why}, and CI must run the service tests")
        pytest.skip(why)


@contextlib.contextmanager
def database(label: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test (dropped afterwards); yields its URL."""
    import psycopg

    name = f"clv_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG.format(name)
    finally:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_keys(project: str) -> list[bytes]:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    return list(client.scan_iter(match=f"*{project}".encode(), count=1000))


def _env(settings) -> dict[str, str]:
    """The environment that makes a `clv` subprocess use the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLV_")}
    env.pop("MLFLOW_TRACKING_URI", None)
    names = ("home", "online_store", "redis_url", "feast_registry", "feast_registry_url",
             "feast_project", "mlflow_tracking_uri", "optuna_storage", "poll_seconds")  # fmt: skip
    for name in names:
        value = getattr(settings, name)
        if value is not None:
            env[f"CLV_{name.upper()}"] = str(value)
    return env


@pytest.fixture(scope="module")
def scale(servers, feast_home, tmp_path_factory):
    """The small world on the scale path: Feast online store in Redis and registry in
    PostgreSQL, an MLflow tracking server backed by PostgreSQL, Optuna in PostgreSQL; churn
    trained by two Optuna workers and promoted through the gate, clv trained."""
    from clv.compose import store_config
    from clv.servers import tracking_server
    from clv.settings import Settings
    from clv.workflows import promote_all, train_models
    from features.store import apply, materialize, open_store

    source, _, _, report = feast_home
    home = tmp_path_factory.mktemp("scale_home")
    for part in ("raw", "truth", "features"):
        (home / part).symlink_to(source / part)
    project = f"t{uuid.uuid4().hex[:10]}"
    with (
        database("feast") as registry_url,
        database("mlflow") as backend,
        database("optuna") as studies,
    ):
        settings = Settings(
            home=home,
            online_store="redis",
            redis_url=REDIS,
            feast_registry="sql",
            feast_registry_url=registry_url,
            feast_project=project,
            mlflow_backend_store=backend,
            mlflow_port=_free_port(),
            optuna_storage=studies,
            poll_seconds=1,
        )
        store = open_store(store_config(settings))
        try:
            apply(store, settings.features_dir)
            materialize(store, settings.features_dir, report.as_of)
            with tracking_server(settings) as url:
                settings = settings.model_copy(update={"mlflow_tracking_uri": url})
                churn = train_models(settings, "churn", trials=4, workers=2)
                clv = train_models(settings, "clv", trials=2)
                outcomes = promote_all(settings, churn + clv)
                yield {
                    "settings": settings,
                    "store": store,
                    "results": {r.name: r for r in churn + clv},
                    "outcomes": outcomes,
                    "backend": backend,
                    "studies": studies,
                }
        finally:
            store.teardown()
            left = _redis_keys(project)
            if left:  # never leave keys behind, even if Feast's teardown missed some
                import redis

                redis.Redis(host="127.0.0.1", port=6379).delete(*left)
            assert not left, f"Feast teardown left {len(left)} Redis keys of {project}"


def _ids(home: Path) -> list[str]:
    customers = pd.read_parquet(home / "raw" / "customers.parquet")
    return customers.loc[customers["status"] == "active", "customer_id"].head(20).tolist()


@pytest.mark.services
def test_features_materialize_to_redis_and_read_back_like_sqlite(scale, feast_home):
    from features.columns import SERVICE_VIEWS
    from features.store import OnlineReader, online_refs

    _, _, sqlite_store, _ = feast_home
    settings, redis_store = scale["settings"], scale["store"]
    assert _redis_keys(settings.feast_project), "materialize wrote no keys to Redis"
    assert {fs.name for fs in redis_store.list_feature_services()} >= set(SERVICE_VIEWS)
    ids = _ids(settings.home) + ["C-does-not-exist"]
    services = ["churn_v1", "expansion_v1", "referral_v1", "clv_v1"]
    on_redis, on_sqlite = (
        OnlineReader(
            store, online_refs(store, services), "customer_id", "customer_directory"
        ).lookup(ids)
        for store in (redis_store, sqlite_store)
    )
    assert on_redis.has_features[:-1].all() and not on_redis.known[-1]
    np.testing.assert_array_equal(on_redis.matrix, on_sqlite.matrix)  # NaN where unobserved


@pytest.mark.services
def test_training_and_gate_run_through_a_postgres_backed_tracking_server(scale):
    import mlflow
    import psycopg

    settings, results = scale["settings"], scale["results"]
    assert settings.tracking_uri.startswith("http://")
    churn = results["churn"]
    assert churn.version == "1" and churn.metrics["roc_auc"] > 0.6
    assert dict((m, o) for m, o, _ in scale["outcomes"])["churn"] == "promoted v1"
    # Runs and the registry live in PostgreSQL; artifacts in the server's own store.
    dbname = scale["backend"].rsplit("/", 1)[1]
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={dbname}") as c:
        runs = c.execute("SELECT count(*) FROM runs").fetchone()[0]
        alias = c.execute("SELECT version FROM registered_model_aliases WHERE name = 'churn'")
        assert alias.fetchone()[0] == 1
    assert runs >= 1 + churn.trials  # parent run + one nested run per trial
    assert list(settings.served_artifacts_dir.rglob("booster.json"))
    mlflow.set_tracking_uri(settings.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/churn@champion")
    rows = pd.read_parquet(settings.features_dir / "customer_features").head(50)
    from features.columns import service_features

    frame = pd.DataFrame({c: rows.get(c, 0.0) for c in service_features("churn_v1")}).astype(
        np.float64
    )
    scores = np.asarray(model.predict(frame), dtype=float)
    assert ((scores > 0) & (scores < 1)).all() and len(np.unique(scores)) > 5


@pytest.mark.services
def test_two_optuna_workers_finish_one_postgres_study_with_the_trial_count(scale):
    import optuna

    study = optuna.load_study(study_name=_study_of(scale, "churn"), storage=scale["studies"])
    finished = [t for t in study.trials if t.state.is_finished() and t.state.name != "FAIL"]
    assert len(finished) == 4
    assert {t.user_attrs.get("worker") for t in finished} <= {"1", "2"}


def _study_of(scale, model: str) -> str:
    from mlflow.tracking import MlflowClient

    uri = scale["settings"].tracking_uri
    run = MlflowClient(uri).get_run(scale["results"][model].run_id)
    return str(run.data.tags["study"])


@pytest.mark.services
def test_a_two_worker_service_serves_and_hot_swaps(scale):
    import httpx
    from mlflow.tracking import MlflowClient

    from clv.workflows import train_models

    settings = scale["settings"]
    second = train_models(settings, "churn", trials=4)[0]  # same study: resumes, new version
    assert second.version == "2"
    port = _free_port()
    clv = Path(sys.executable).with_name("clv")
    server = subprocess.Popen(
        [str(clv), "serve", "--port", str(port), "--workers", "2"],
        env=_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    customer = _ids(settings.home)[0]
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            assert server.poll() is None, (
                server.stdout.read().decode()[-3000:] if server.stdout else ""
            )
            time.sleep(0.5)
        else:
            pytest.fail("the two-worker service never became ready")
        # /readyz answers for the worker that takes the request: wait until both serve.
        streak = 0
        while time.time() < deadline and streak < 10:
            ok = httpx.post(f"{base}/score", json={"customer_id": customer}, timeout=10)
            streak = streak + 1 if ok.status_code == 200 else 0
            time.sleep(0 if streak else 0.5)
        assert streak >= 10, "a worker never became ready"

        def versions(n: int) -> set[str]:
            """Champion versions of n answers. A worker still starting (503, not ready) serves
            no version at all; on a loaded machine the second one can start after the streak
            above, so its request is sent again."""
            seen = set()
            for _ in range(n):
                body = httpx.post(f"{base}/score", json={"customer_id": customer}, timeout=10)
                while body.status_code == 503 and "not ready" in body.text:
                    assert time.time() < deadline, "a worker never became ready"
                    time.sleep(0.5)
                    body = httpx.post(f"{base}/score", json={"customer_id": customer}, timeout=10)
                assert body.status_code == 200, body.text
                seen.add(body.json()["churn"]["version"])
            return seen

        assert versions(10) == {"1"}
        client.set_registered_model_alias("churn", "champion", "2")
        deadline = time.time() + 90
        while time.time() < deadline and versions(1) != {"2"}:
            time.sleep(0.5)
        time.sleep(3)  # every worker polls on its own; give the slower one its interval
        assert versions(20) == {"2"}, "a worker kept serving the old champion"
    finally:
        client.set_registered_model_alias("churn", "champion", "1")
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


# ---- Optuna workers: a killed worker loses no trial ------------------------------------------
def _slow_problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(12_000, 8))
    y = (X[:, 0] + 0.5 * X[:, 1] * X[:, 2] + rng.normal(size=len(X)) > 0).astype(float)
    return X[:9_000], y[:9_000], X[9_000:], y[9_000:]


def _slow_spec():
    from training.specs import SPECS, Param

    space = {"learning_rate": Param(low=0.01, high=0.02, log=True),
             "max_depth": Param(low=4, high=6, integer=True)}  # fmt: skip
    return SPECS["churn"].model_copy(update={"search_space": space, "max_rounds": 150})


@pytest.mark.services
def test_a_killed_worker_loses_no_trial(servers):
    import optuna

    from training.tuning import Heartbeat, StudyPlan, open_study, run_trials, tune

    spec, arrays = _slow_spec(), _slow_problem()
    X_tr, y_tr, X_va, y_va = arrays
    with database("killed") as storage:
        plan = StudyPlan(spec, storage, "killed", 3, 0, Heartbeat(interval=1, grace=3))
        context = multiprocessing.get_context("spawn")
        args = (replace(plan, seed=1), arrays, 1, "victim")
        victim = context.Process(target=run_trials, args=args)
        victim.start()  # races this process to create Optuna's tables; both must cope
        study = open_study(plan)
        deadline = time.time() + 120
        while time.time() < deadline and not study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
        ):
            time.sleep(0.05)
        assert victim.is_alive(), "the worker died before its first trial"
        # Dies inside its first trial, possibly before that trial's first heartbeat.
        os.kill(victim.pid, signal.SIGKILL)
        victim.join()
        result = tune(plan, pd.DataFrame(X_tr), y_tr, pd.DataFrame(X_va), y_va, study=study)
        states = [t.state.name for t in study.get_trials(deepcopy=False)]
        retried = [t for t in study.get_trials(deepcopy=False) if "failed_trial" in t.system_attrs]
        optuna.delete_study(study_name="killed", storage=storage)
    assert result.trials == 3
    assert states.count("COMPLETE") + states.count("PRUNED") == 3
    assert states.count("FAIL") >= 1, states  # the killed worker's trial, marked failed ...
    assert retried, "the killed trial was not queued again"  # ... and run again


@pytest.mark.services
def test_two_worker_processes_share_a_study_exactly(servers):
    import optuna

    from training.tuning import StudyPlan, tune

    spec, (X_tr, y_tr, X_va, y_va) = _slow_spec(), _slow_problem(1)
    with database("workers") as storage:
        plan = StudyPlan(spec, storage, "shared", 5, 0)
        result = tune(plan, pd.DataFrame(X_tr), y_tr, pd.DataFrame(X_va), y_va, workers=2)
        trials = optuna.load_study(study_name="shared", storage=storage).trials
        optuna.delete_study(study_name="shared", storage=storage)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert result.trials == 5 and len(finished) == 5
    # Which worker ran how many depends on start-up timing; all trials came from the two.
    assert {t.user_attrs["worker"] for t in finished} <= {"1", "2"}


# ---- XGBoost on Dask ---------------------------------------------------------------------------
def test_a_dask_trained_model_matches_the_single_process_model(feast_home, tmp_path):
    """Same spec, data and tuned parameters; the refit runs on a local Dask cluster. The
    tolerance: test AUC within 0.02 of the single-process model's."""
    from mlflow.tracking import MlflowClient

    from features.pipeline import read_raw
    from features.store import built_cutoffs
    from training.job import JobConfig, train
    from training.specs import SPECS

    home, _, store, report = feast_home
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = JobConfig(
        tracking_uri=uri,
        artifacts_dir=tmp_path / "mlartifacts",
        study_storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        truth_dir=home / "truth",
        trials=3,
        seed=5,
        git_revision="test",
    )
    raw, cutoffs = read_raw(home / "raw"), built_cutoffs(home / "features")
    single = train(SPECS["churn"], config, raw, store, cutoffs, report.as_of)
    on_dask = train(
        SPECS["churn"], JobConfig(**{**config.__dict__, "dask_scheduler": "local"}),
        raw, store, cutoffs, report.as_of,
    )  # fmt: skip
    assert on_dask.version == "2"
    assert abs(on_dask.metrics["roc_auc"] - single.metrics["roc_auc"]) <= 0.02
    assert on_dask.metrics["ece"] <= 0.1
    params = MlflowClient(uri).get_run(on_dask.run_id).data.params
    assert params["trainer"] == "xgboost.dask"


def test_batch_scoring_on_dask_matches_the_single_process_scores(served_home, tmp_path):
    """`clv score --all` with CLV_DASK_SCHEDULER: each model scores its population on the
    cluster, a block of rows per worker, with the same maths; the output is the same."""
    from clv.settings import Settings
    from clv.workflows import score_all

    home, uri, _ = served_home
    local = Settings(home=home, mlflow_tracking_uri=uri)
    score_all(local, tmp_path / "local.parquet", reasons=True)
    on_dask = local.model_copy(update={"dask_scheduler": "local"})
    score_all(on_dask, tmp_path / "dask.parquet", reasons=True)
    expected = pd.read_parquet(tmp_path / "local.parquet")
    found = pd.read_parquet(tmp_path / "dask.parquet")
    assert len(found) > 100 and "churn_top_reason" in found
    pd.testing.assert_frame_equal(found, expected)
