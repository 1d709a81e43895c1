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
