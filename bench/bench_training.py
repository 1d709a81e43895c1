"""Training benchmark: `clv train MODEL` for every built-in model, each in its own process.

Target (from the issue): `clv train all` at the default size with 30 Optuna trials per model
within 15 minutes on 2 cores, with per-model time and peak memory. Scale 10 runs the same
with fewer trials (skipped by `--quick`) to show how the cost grows; it has no target.

Each scale gets a fresh CLV_HOME (simulate, build, apply, materialize through the CLI; those
steps are reported but not part of the training time). Set BENCH_TRAIN_HOME to a folder to
keep the homes there and reuse a prepared one on the next run; BENCH_TRAIN_SCALES (e.g. "10")
runs only the scales named. The table also shows each
model's test metric next to the oracle's, read from the MLflow run of the version trained.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.bench_features import _cli, pipeline
from bench.common import run_command, table

MODELS = ("churn", "expansion", "reactivation", "referral", "clv")
TRIALS = {1.0: 30, 10.0: 3}
QUICK_TRIALS = {1.0: 5}
TARGET_SECONDS = 15 * 60.0  # all five models at scale 1, 30 trials


def _metrics(home: Path, model: str) -> dict[str, float]:
    """Test metric and the oracle's of the newest version of `model` in the home's MLflow."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    versions = client.search_model_versions(f"name = '{model}'")
    if not versions:
        return {}
    newest = max(versions, key=lambda v: int(v.version))
    metrics = client.get_run(str(newest.run_id)).data.metrics
    keys = ("roc_auc", "oracle_roc_auc", "expected_gap_roc_auc", "gap_noise_sd_roc_auc", "ece",
            "mae", "baseline_mae")  # fmt: skip
    return {"version": int(newest.version), **{k: metrics[k] for k in keys if k in metrics}}


def train_scale(home: Path, scale: float, trials: int) -> dict[str, Any]:
    """Prepare `home` (unless it holds a materialized world) and train each model."""
    prepared = (home / "feast" / "online.db").exists()
    steps = {} if prepared else pipeline(home, scale)
    if any(s["status"] != "ok" for s in steps.values()):
        return {"steps": steps, "models": {}}
    models: dict[str, Any] = {}
    for model in MODELS:
        print(f"scale {scale:g}: clv train {model} --trials {trials} ...", flush=True)
        try:
            run = run_command(_cli(home, "train", model, "--trials", str(trials)))
        except RuntimeError as exc:
            models[model] = {"status": "failed", "error": str(exc)}
            print(f"  FAILED: {exc}", flush=True)
            continue
        models[model] = {
            "status": "ok",
            "seconds": run.seconds,
            "peak_rss_mb": run.peak_rss_mb,
            **_metrics(home, model),
        }
        print(f"  {run.seconds:.1f} s, {run.peak_rss_mb:.0f} MB peak RSS", flush=True)
    return {"steps": steps, "models": models, "reused_home": prepared}


def _rows(scale: float, trials: int, result: dict[str, Any]) -> list[list[Any]]:
    from training.metrics import expected_gap_text

    rows = []
    for model, m in result["models"].items():
        metric = f"AUC {m['roc_auc']:.3f}" if "roc_auc" in m else ""
        if "mae" in m and not metric:
            metric = f"MAE {m['mae']:.1f} (naive {m.get('baseline_mae', float('nan')):.1f})"
        oracle = f"{m['oracle_roc_auc']:.3f}" if "oracle_roc_auc" in m else ""
        expected = expected_gap_text(m)
        rows.append(
            [f"{scale:g}", model, trials, m["status"], m.get("seconds"), m.get("peak_rss_mb"),
             metric, oracle, expected, None, None]
        )  # fmt: skip
    done = [m for m in result["models"].values() if m["status"] == "ok"]
    if len(done) == len(MODELS):
        total = sum(m["seconds"] for m in done)
        peak = max(m["peak_rss_mb"] for m in done)
        full = scale == 1.0 and trials == TRIALS[1.0]
        target = f"<= {TARGET_SECONDS / 60:g} min" if full else "(reference)"
        met = total <= TARGET_SECONDS if full else None
        rows.append([f"{scale:g}", "all", trials, "ok", total, peak, "", "", "", target, met])
    return rows


def run(args: Any) -> dict[str, Any]:
    trials = QUICK_TRIALS if args.quick else TRIALS
    if only := os.environ.get("BENCH_TRAIN_SCALES"):
        chosen = {float(s) for s in only.split(",")}
        trials = {s: n for s, n in TRIALS.items() if s in chosen}
    keep = os.environ.get("BENCH_TRAIN_HOME")
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench-train-"))
    out: dict[str, Any] = {"trials": {f"{s:g}": n for s, n in trials.items()}, "scales": {}}
    rows: list[list[Any]] = []
    try:
        for scale, n in trials.items():
            home = root / f"scale-{scale:g}"
            result = train_scale(home, scale, n)
            out["scales"][f"{scale:g}"] = result
            rows += _rows(scale, n, result)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    columns = ["scale", "model", "trials", "status", "seconds", "peak MB", "test", "oracle AUC",
               "expected gap", "target", "met"]  # fmt: skip
    out["tables"] = [table("clv train, one process per model", columns, rows)]
    return out
