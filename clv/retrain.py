"""`clv retrain`: the scheduled job. Validate the raw data, build and materialize new features,
report drift, train every model, run the gate, write a summary; one run at a time."""

from __future__ import annotations

import fcntl
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from clv.compose import store_config
from clv.settings import Settings
from clv.workflows import promote_all, train_each, world_now
from features.pipeline import build_features, read_raw
from features.store import apply, materialize, open_store
from features.validation import RawDataError, check_volume, validate_raw

log = logging.getLogger(__name__)


class RetrainError(RuntimeError):
    """The run stopped before training; the summary says why."""


@contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock for the whole run; a second run fails at once."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RetrainError(f"another retrain holds {lock_file}; try again later") from exc
        yield


def run_retrain(settings: Settings, echo: Callable[[str], None]) -> dict[str, Any]:
    """The whole job; returns the summary (also written as JSON and markdown)."""
    folder = settings.home / "retrain"
    state_file = folder / "state.json"
    previous = json.loads(state_file.read_text()) if state_file.exists() else {}
    stamp = time.strftime("%Y%m%dT%H%M%S")
    summary: dict[str, Any] = {"started": stamp, "status": "running", "problems": []}
    with exclusive(folder / "retrain.lock"):
        try:
            raw = read_raw(settings.raw_dir)
            end = validate_raw(raw, world_now(settings))
            problems = check_volume(raw, end, previous.get("rows"))
        except RawDataError as exc:
            problems = [str(exc)]
            end = None
        if problems:
            summary.update(status="invalid data", problems=problems)
            _write(folder, stamp, summary)
            raise RetrainError("raw data rejected: " + "; ".join(problems))
        echo(f"raw data valid up to {end.date()}")
        report = build_features(settings.raw_dir, settings.features_dir, now=world_now(settings))
        echo(report.describe())
        store = open_store(store_config(settings))
        apply(store, settings.features_dir)
        materialize(store, settings.features_dir, report.as_of)
        summary["features_as_of"] = str(report.as_of.date())
        summary["drift"] = drift_report(settings, store, report.as_of)
        results, skipped = train_each(settings, None, echo)
        summary["skipped"] = skipped
        promoted = promote_all(settings, results)
        outcomes = {name: (outcome, reason) for name, outcome, reason in promoted}
        summary["models"] = {
            r.name: {
                "version": r.version,
                "decision": outcomes[r.name][0],
                "why": outcomes[r.name][1],
                "metrics": {k: v for k, v in r.metrics.items() if not k.startswith("oracle_")},
                "oracle": {k: v for k, v in r.metrics.items() if k.startswith("oracle_")},
            }
            for r in results
        }
        summary["status"] = "done"
        _write(folder, stamp, summary)
        _log_to_mlflow(settings, stamp, summary)
        state_file.write_text(
            json.dumps(
                {"as_of": str(report.as_of.date()), "rows": {k: len(v) for k, v in raw.items()}}
            )
        )
    return summary


def drift_report(settings: Settings, store: Any, as_of: pd.Timestamp) -> dict[str, Any]:
    """Per champion: PSI of each feature and of the score between the champion's training
    rows (the sample logged with it; its test rows for older versions) and the newest month's
    population, scored by the same champion."""
    from features.columns import CALENDAR_FEATURES
    from features.store import historical_matrix, latest_population
    from registry.store import RegistryStore
    from training.drift import drift_table, psi
    from training.specs import SPECS

    registry = RegistryStore(settings.tracking_uri, settings.artifacts_dir)
    _, populations = latest_population(settings.features_dir)
    out: dict[str, Any] = {}
    for name, spec in SPECS.items():
        try:
            champion = registry.aliases(name).get("champion") if name in registry.models() else None
            if champion is None:
                continue
            info = registry.version(name, champion)
            try:
                reference, source = registry.logged_table(info, "train_sample.parquet"), "train"
            except LookupError:
                reference, source = registry.test_set(info), "test"
            entity = populations[spec.entity]
            if entity.empty:
                out[name] = {"champion": champion, "error": "no entities in the newest month"}
                continue
            _, current = historical_matrix(store, spec.feature_service, entity)
            features = [c for c in registry.scorer(info).features if c in current.columns]
            score_psi = psi(registry.score(info, reference), registry.score(info, current))
        except Exception as exc:  # a broken champion must not stop the retrain; it is reported
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        table = drift_table(reference[features], current[features], skip=CALENDAR_FEATURES)
        out[name] = {
            "champion": champion,
            "reference": f"{len(reference)} {source} rows of v{champion}",
            "current": f"{len(current)} rows as of {as_of.date()}",
            "score_psi": score_psi,
            "max_psi": float(table["psi"].max()) if len(table) else 0.0,
            "top": table.head(5).to_dict("records"),
            "left_out": sorted(CALENDAR_FEATURES & set(features)),  # calendar, not drift
        }
    return out


def _log_to_mlflow(settings: Settings, stamp: str, summary: dict[str, Any]) -> None:
    """One run per retrain in the `retrain` experiment: drift metrics and the summary."""
    from training import tracking

    experiment = tracking.configure(settings.tracking_uri, settings.artifacts_dir, "retrain")
    with tracking.parent_run(experiment, f"retrain-{stamp}", {"status": summary["status"]}):
        metrics = {
            f"{kind}_{name}": d[kind]
            for name, d in summary["drift"].items()
            for kind in ("max_psi", "score_psi")
            if kind in d
        }
        tracking.log_metrics(metrics)
        tracking.log_json(summary, "summary.json")


def _write(folder: Path, stamp: str, summary: dict[str, Any]) -> None:
    target = folder / stamp
    target.mkdir(parents=True, exist_ok=True)
    (target / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    lines = [f"# Retrain {stamp}: {summary['status']}", ""]
    for problem in summary.get("problems", []):
        lines.append(f"- problem: {problem}")
    for name, model in summary.get("models", {}).items():
        lines.append(f"- **{name}** v{model['version']}: {model['decision']} ({model['why']})")
    for name, drift in summary.get("drift", {}).items():
        if "max_psi" in drift:
            top = drift["top"][0]["feature"] if drift["top"] else "-"
            lines.append(
                f"- drift {name}: score PSI {drift['score_psi']:.3f}, max feature PSI "
                f"{drift['max_psi']:.3f} ({top}); {drift['reference']} vs {drift['current']}"
            )
        elif "error" in drift:
            lines.append(f"- drift {name}: not measured ({drift['error']})")
    (target / "summary.md").write_text("\n".join(lines) + "\n")
    log.info("summary written to %s", target)
