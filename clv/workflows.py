"""Multi-step jobs composed from the layers (kept out of the CLI so tests can call them)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from clv.compose import job_config, store_config
from clv.settings import Settings
from features.pipeline import read_raw
from features.store import built_cutoffs, open_store
from features.validation import validate_raw
from training.job import TrainResult, train
from training.specs import SPECS, get_spec, load_specs

log = logging.getLogger(__name__)


def train_models(
    settings: Settings, model: str, trials: int | None = None, spec_file: Path | None = None
) -> list[TrainResult]:
    """Train `model` (or every model for 'all') on the current feature store."""
    specs = load_specs(spec_file) if spec_file else dict(SPECS)
    names = list(specs) if model == "all" else [get_spec(model, specs).name]
    raw = read_raw(settings.raw_dir)
    as_of = validate_raw(raw, pd.Timestamp.now())
    cutoffs = built_cutoffs(settings.features_dir)
    if not cutoffs:
        raise FileNotFoundError(
            f"no feature tables in {settings.features_dir}; run `clv features build` first"
        )
    store = open_store(store_config(settings))
    config = job_config(settings, trials)
    results = []
    for name in names:
        results.append(train(specs[name], config, raw, store, cutoffs, as_of))
    return results


def score_all(settings: Settings, out: Path, reasons: bool = False) -> str:
    """Score the whole served population with the champions, from Feast's offline store,
    with the service's own maths; write one parquet row per entity."""
    import time

    from clv.compose import engine_config
    from serving.engine import Engine

    engine = Engine(engine_config(settings))
    engine.refresh()
    if not engine.ready:
        raise LookupError(f"cannot score: {engine.not_ready_reason}")
    state = engine.state
    started = time.perf_counter()
    frames = []
    for kind, population in (("customer", state.customers), ("dormant", state.dormant)):
        if population is None:
            continue
        ids = list(population.index)
        frame = pd.DataFrame({"entity_id": ids, "kind": kind})
        for name, table in population.tables.items():
            champion = state.champions[name]
            frame[f"{name}_score"] = table.score
            frame[f"{name}_percentile"] = table.percentile
            frame[f"{name}_band"] = table.band
            frame[f"{name}_version"] = champion.version
            if reasons and table.reason_index.shape[1]:
                frame[f"{name}_top_reason"] = [
                    champion.features[i] for i in table.reason_index[:, 0]
                ]
        frames.append(frame)
    result = pd.concat(frames, ignore_index=True)
    result["features_as_of"] = state.features_as_of
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    result.to_parquet(tmp, index=False)
    tmp.replace(out)
    return (
        f"wrote {len(result):,} rows to {out} (features as of {state.features_as_of}; "
        f"{time.perf_counter() - started:.1f} s after scoring)"
    )
