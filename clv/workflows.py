"""Multi-step jobs composed from the layers (kept out of the CLI so tests can call them)."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from clv.compose import job_config, store_config, world_now
from clv.settings import Settings
from features.pipeline import read_raw
from features.store import built_cutoffs, open_store
from features.validation import validate_raw
from training.specs import SPECS, get_spec, load_specs

if TYPE_CHECKING:  # the training job pulls in Optuna, matplotlib and SciPy: scoring never needs it
    from training.job import TrainResult

log = logging.getLogger(__name__)
EXPECTED_GAP_NOTE = (
    "(expected gap: the oracle's lead when labels are drawn from the true probabilities, "
    "+- how far one test set's gap strays by luck)"
)


def training_table(results: list[TrainResult]) -> str:
    """The summary of `clv train`: per model, the test metric next to the oracle's."""
    lines = [
        f"{'model':13s} {'trials':>6s} {'metric':>8s} {'test':>9s} {'oracle':>9s} {'gap':>8s}"
        f" {'ceiling':>8s} {'expected gap':>12s} {'version':>7s} {'seconds':>7s}"
    ]
    for r in results:
        metric = "roc_auc" if "roc_auc" in r.metrics else "mae"
        gap = r.oracle - r.primary if metric == "roc_auc" else r.primary - r.oracle
        ceiling = f"{r.ceiling:8.4f}" if r.ceiling == r.ceiling else f"{'-':>8s}"
        lines.append(
            f"{r.name:13s} {r.trials:6d} {metric:>8s} {r.primary:9.4f} {r.oracle:9.4f} {gap:8.4f}"
            f" {ceiling} {r.expected_gap:>12s} {r.version:>7s} {r.seconds:7.0f}"
        )
    lines.append(EXPECTED_GAP_NOTE)
    return "\n".join(lines)


def train_models(
    settings: Settings,
    model: str,
    trials: int | None = None,
    spec_file: Path | None = None,
    reuse: bool = False,
    workers: int | None = None,
    join: bool = False,
) -> list[TrainResult]:
    """Train `model` (or every model for 'all') on the current feature store."""
    from training.job import train

    specs = load_specs(spec_file) if spec_file else dict(SPECS)
    names = list(specs) if model == "all" else [get_spec(model, specs).name]
    raw = read_raw(settings.raw_dir)
    as_of = validate_raw(raw, world_now(settings))
    cutoffs = built_cutoffs(settings.features_dir)
    if not cutoffs:
        raise FileNotFoundError(
            f"no feature tables in {settings.features_dir}; run `clv features build` first"
        )
    store = open_store(store_config(settings))
    config = job_config(settings, trials, workers=workers, join=join)
    if reuse:
        config = replace(config, reuse=True)
    results = []
    for name in names:
        results.append(train(specs[name], config, raw, store, cutoffs, as_of))
    return results


@contextlib.contextmanager
def _row_scorer(settings: Settings, reasons: bool) -> Iterator[Callable]:
    """How each model scores its population: the service's own `score_matrix`, with the
    reasons only when asked for; with CLV_DASK_SCHEDULER set, on the Dask cluster, a block of
    rows per worker, else in this process."""
    from serving.scoring import concat_tables, score_matrix

    score = functools.partial(score_matrix, reasons=reasons)
    if not settings.dask_scheduler:
        yield score
        return
    from training.distributed import block_map, dask_client

    with dask_client(settings.dask_scheduler, workers=settings.dask_workers) as client:
        run = block_map(client, score)
        yield lambda scorer, matrix: concat_tables(run(scorer, matrix))


@dataclass(frozen=True)
class BatchScores:
    """The scores of the whole served population, one row per entity, and what they took."""

    frame: pd.DataFrame
    features_as_of: str | None
    models: int
    # champions, features, scoring (the tables and the frame); scoring_customer and
    # scoring_dormant: each population's models on its matrix
    seconds: dict[str, float]

    @property
    def rate(self) -> float:
        """Entities per second of the scoring phase, each scored by every model of its kind
        (customers by the customer models, dormant contacts by reactivation)."""
        return len(self.frame) / max(self.seconds["scoring"], 1e-9)

    @property
    def customer_rate(self) -> float:
        """Active customers per second, each scored by all four customer models."""
        customers = int((self.frame["kind"] == "customer").sum())
        return customers / max(self.seconds["scoring_customer"], 1e-9)


def batch_scores(settings: Settings, reasons: bool = False) -> BatchScores:
    """Score every active customer and dormant contact with the champions, with the
    service's own engine and maths on the latest cutoff of the offline store; each model
    scores its whole population as one matrix, the reasons only when asked for."""
    import time

    from clv.compose import engine_config
    from serving.engine import Engine

    with _row_scorer(settings, reasons) as score_rows:
        engine = Engine(
            engine_config(settings),
            prebuild_responses=False,
            score_rows=score_rows,
            online_store=False,
        )
        engine.refresh()
    if not engine.ready:
        raise LookupError(f"cannot score: {engine.not_ready_reason}")
    state = engine.state
    started = time.perf_counter()
    frames = []
    for kind, population in (("customer", state.customers), ("dormant", state.dormant)):
        if population is None:
            continue
        columns: dict[str, object] = {"entity_id": list(population.index), "kind": kind}
        for name, table in population.tables.items():
            champion = state.champions[name]
            columns[f"{name}_score"] = table.score
            columns[f"{name}_percentile"] = table.percentile
            columns[f"{name}_band"] = table.band
            columns[f"{name}_version"] = champion.version
            if reasons and table.reason_index.shape[1]:
                names = np.asarray(champion.features, dtype=object)
                columns[f"{name}_top_reason"] = names[table.reason_index[:, 0]]
        frames.append(pd.DataFrame(columns))
    if state.features_as_of is None:
        raise LookupError(
            f"cannot score: no feature tables in {settings.features_dir}; run `clv features build`"
        )
    if not frames:
        raise LookupError("cannot score: the latest cutoff has no active or dormant entity")
    result = pd.concat(frames, ignore_index=True)
    result["features_as_of"] = state.features_as_of
    seconds = {
        k: engine.timings.get(k, 0.0)
        for k in ("champions", "features", "scoring", "scoring_customer", "scoring_dormant")
    }
    seconds["scoring"] += time.perf_counter() - started
    models = sum(len(p.tables) for p in (state.customers, state.dormant) if p is not None)
    return BatchScores(result, state.features_as_of, models, seconds)


def score_all(settings: Settings, out: Path, reasons: bool = False) -> str:
    """Score the whole served population with the champions (`batch_scores`); write one
    parquet row per entity."""
    import time

    started = time.perf_counter()
    scores = batch_scores(settings, reasons=reasons)
    written = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    scores.frame.to_parquet(tmp, index=False)
    tmp.replace(out)
    seconds = scores.seconds
    return (
        f"wrote {len(scores.frame):,} rows to {out} (features as of {scores.features_as_of}); "
        f"scoring {seconds['scoring']:.2f} s, {scores.rate:,.0f} entities/s with "
        f"{scores.models} models{' and reasons' if reasons else ''} (customers "
        f"{scores.customer_rate:,.0f}/s with the four customer models); champions "
        f"{seconds['champions']:.1f} s, features {seconds['features']:.2f} s, write "
        f"{time.perf_counter() - written:.2f} s, {time.perf_counter() - started:.1f} s in all"
    )


def train_each(
    settings: Settings, trials: int | None, echo: Callable[[str], None]
) -> tuple[list[TrainResult], dict[str, str]]:
    """Train every built-in model, reusing versions trained on the same data and code; a
    model whose data cannot make a training set (e.g. one class only) is skipped, named."""
    from training.dataset import DatasetError

    results, skipped = [], {}
    for name in SPECS:
        try:
            results += train_models(settings, name, trials=trials, reuse=True)
        except DatasetError as exc:
            skipped[name] = str(exc)
            echo(f"    {name}: not trained: {exc}")
    return results, skipped


def promote_all(settings: Settings, results: list[TrainResult]) -> list[tuple[str, str, str]]:
    """Run the gate on each freshly trained version: (model, outcome, first reason)."""
    from registry.operations import promote
    from registry.store import RegistryStore

    store = RegistryStore(settings.tracking_uri, settings.artifacts_dir)
    outcomes = []
    for result in results:
        champion = store.aliases(result.name).get("champion")
        if champion == result.version:
            outcomes.append((result.name, f"champion v{result.version} (unchanged)", ""))
            continue
        decision = promote(store, SPECS[result.name], result.version, by="clv demo")
        verdict = "promoted" if decision.promote else "refused"
        telling = [r for r in decision.reasons if r.startswith("fail")] or [
            r for r in decision.reasons if "feature service" not in r and "signature" not in r
        ]
        reason = telling[0] if telling else ""
        outcomes.append((result.name, f"{verdict} v{result.version}", reason))
    return outcomes


def run_demo(settings: Settings, echo: Callable[[str], None]) -> None:
    """The main job on the embedded default, end to end (idempotent: a second run reuses
    the world, the feature tables and any model trained on the same data and code)."""
    import time

    from features.pipeline import build_features
    from features.store import apply, materialize
    from simulator.io import Manifest, as_of, holds_data, write_world
    from simulator.summary import summarize
    from simulator.world import simulate

    started = time.perf_counter()

    def step(text: str) -> None:
        echo(f"[{time.perf_counter() - started:5.0f} s] {text}")

    wanted = (settings.seed, settings.scale, settings.months)
    manifest = Manifest.read(settings.raw_dir) if holds_data(settings.raw_dir) else None
    if manifest and (manifest.seed, manifest.scale, manifest.months) == wanted:
        step(f"1/6 database already simulated in {settings.raw_dir}; reusing it")
    else:
        step(f"1/6 simulating the TechFlow database (scale {settings.scale:g})")
        world = simulate(months=settings.months, scale=settings.scale, seed=settings.seed)
        manifest = write_world(world, settings.raw_dir, settings.truth_dir, force=True)
    summary = summarize(read_raw(settings.raw_dir), as_of(manifest.months))
    step(
        f"    {summary.active_customers:,} active, {summary.former_customers:,} former customers,"
        f" {summary.aged_leads:,} aged leads; retention {summary.annual_retention:.1%}"
    )

    step("2/6 building, registering and materializing features (Feast)")
    report = build_features(settings.raw_dir, settings.features_dir, now=world_now(settings))
    step(f"    {report.describe()}")
    store = open_store(store_config(settings))
    apply(store, settings.features_dir)
    materialize(store, settings.features_dir, report.as_of)

    step(f"3/6 training all models ({settings.demo_trials} Optuna trials each; MLflow)")
    results, _ = train_each(settings, settings.demo_trials, step)

    step("4/6 promotion gate")
    outcomes = promote_all(settings, results)
    for name, outcome, reason in outcomes:
        step(f"    {name:13s} {outcome}{': ' + reason if reason else ''}")

    step("5/6 starting the scoring service and scoring real ids over HTTP")
    calls = serve_and_score(settings, echo)

    step("6/6 summary")
    echo("")
    echo(
        f"{'model':13s} {'metric':8s} {'test':>9s} {'oracle':>9s} {'ceiling':>9s}"
        f" {'expected gap':>12s} {'champion':>11s}"
    )
    champions = {name: outcome for name, outcome, _ in outcomes}
    for r in results:
        metric = "roc_auc" if "roc_auc" in r.metrics else "mae"
        ceiling = f"{r.ceiling:9.4f}" if r.ceiling == r.ceiling else f"{'-':>9s}"
        echo(
            f"{r.name:13s} {metric:8s} {r.primary:9.4f} {r.oracle:9.4f} {ceiling} "
            f"{r.expected_gap:>12s} {champions.get(r.name, ''):>11s}"
        )
    echo("(ceiling: trees fitted to the true probabilities on the same features)")
    echo(EXPECTED_GAP_NOTE)
    echo("")
    echo(f"scored over HTTP: {calls}")
    echo(f"outputs: {settings.home} (raw/, truth/, features/, feast/, mlflow.db, mlartifacts/)")
    echo(f"MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {settings.tracking_uri}")
    echo(f"API docs:   make serve, then open http://127.0.0.1:{settings.port}/")
    echo(f"demo finished in {time.perf_counter() - started:.0f} s")


def serve_and_score(settings: Settings, echo: Callable[[str], None]) -> str:
    """Start `clv serve` on a free port, score a few real ids, stop it."""
    import json
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    from features.store import latest_directory

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    clv = Path(sys.executable).with_name("clv")
    env = {
        **os.environ,
        "CLV_HOME": str(settings.home),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
    }
    env.pop("CLV_API_KEY", None)
    server = subprocess.Popen(
        [str(clv), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        while True:
            if server.poll() is not None:
                raise RuntimeError("the scoring service exited during start-up (run `make serve`)")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - started > 180:
                raise RuntimeError("the scoring service did not become ready in 180 s")
            time.sleep(0.5)
        echo(f"    ready in {time.perf_counter() - started:.0f} s at {base}")
        directory = latest_directory(settings.features_dir)
        customers = directory["customer_directory"]
        ids = customers.loc[customers["customer_status"] == 1, "customer_id"].head(3).tolist()
        for identifier in ids:
            body = httpx.post(f"{base}/score", json={"customer_id": identifier}).json()
            parts = [
                f"{m} {body[m]['score']:.3f} ({body[m]['band']})"
                for m in ("churn", "expansion", "referral", "clv")
                if body.get(m)
            ]
            echo(f"    POST /score {identifier}: " + ", ".join(parts))
        leads = directory["lead_directory"]
        aged = leads.loc[leads["lead_status"] == 2, "lead_id"].head(1).tolist()
        for identifier in aged:
            response = httpx.post(f"{base}/score_lead", json={"lead_id": identifier})
            text = json.dumps(response.json().get("reactivation", response.json()))[:90]
            echo(f"    POST /score_lead {identifier}: {response.status_code} {text}")
        missing = httpx.post(f"{base}/score", json={"customer_id": "C-unknown"})
        echo(f"    POST /score C-unknown: {missing.status_code} {missing.json()}")
        return f"{len(ids)} customers, {len(aged)} lead, 1 unknown id"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
