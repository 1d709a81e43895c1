"""Registry operations: evaluate a candidate against the champion on the same rows, promote,
stage, roll back, compare, and read the audit trail.

These are what the command line and the scheduled retrain job call. They talk to MLflow only
through `registry.store.RegistryStore`; the decision itself is `registry.gate.decide`.

Alias moves are ordered so a failure never leaves a model without a champion: `previous` is
set to the old champion first, then `champion` moves (and `previous` is put back if that
fails). Bad input (unknown model or version, a version that cannot be served, a forced
promotion without a reason, nothing to roll back to) raises before anything is written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.columns import service_features
from registry.gate import Compatibility, Decision, Evaluation, decide
from registry.records import Action, AuditEntry, VersionInfo, now_iso
from training.clv import NAIVE_FEATURE, naive_predict
from training.metrics import classification_metrics, regression_metrics
from training.specs import ModelSpec

if TYPE_CHECKING:
    from registry.store import RegistryStore

log = logging.getLogger(__name__)

CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous", "challenger"
LABEL = "label"
TAG_LIMIT = 5000


class IncompatibleVersionError(ValueError):
    """A version whose feature service or input signature does not match its spec: it could
    not be served, so it can be neither promoted (even by force) nor staged."""


@dataclass(frozen=True)
class Assessment:
    """A candidate, the champion it was compared with, and the gate's decision."""

    candidate: VersionInfo
    champion: VersionInfo | None
    evaluation: Evaluation
    champion_evaluation: Evaluation | None
    decision: Decision


@dataclass(frozen=True)
class Comparison:
    """Metrics of several versions on the same test rows."""

    model: str
    rows_of: str
    rows: int
    metrics: dict[str, dict[str, float]]  # version -> metric -> value


@dataclass(frozen=True)
class ModelRow:
    """One line of the registry overview."""

    model: str
    versions: int
    champion: VersionInfo | None
    challenger: str
    previous: str
    primary_metric: str
    primary: float
    oracle_gap: float
    feature_service: str


# ---- pure helpers ----------------------------------------------------------------------------
def metrics_on(
    spec: ModelSpec, labels: np.ndarray, predictions: np.ndarray, rows: pd.DataFrame
) -> dict[str, float]:
    """Test metrics of predictions on rows (for a regression, with the naive baseline's MAE on
    the same rows, which the `beat_baseline` rule needs)."""
    if spec.objective == "regression":
        metrics = regression_metrics(labels, predictions)
        if NAIVE_FEATURE in rows.columns:
            baseline = naive_predict(rows)
            metrics["baseline_mae"] = regression_metrics(labels, baseline)["mae"]
        return metrics
    return classification_metrics(labels, predictions)


def overlap_note(spec: ModelSpec, champion: VersionInfo, candidate: VersionInfo) -> str | None:
    """A caveat when the champion was trained on cutoffs too close to (or inside) the
    candidate's test window, so its score on those rows may be optimistic."""
    champion_train = _window(champion.tags.get("training_window", ""))
    candidate_test = _window(candidate.tags.get("test_window", ""))
    if champion_train is None or candidate_test is None:
        return None
    train_end, test_start = champion_train[1], candidate_test[0]
    if train_end + pd.DateOffset(months=spec.gap) <= test_start:
        return None
    return (
        f"champion v{champion.version} was trained on cutoffs up to {train_end.date()}, "
        f"within {spec.gap} month(s) of the candidate's test cutoff {test_start.date()}: "
        "its score on these rows may be optimistic"
    )


def oracle_gap(tags: Mapping[str, str], metric: str, higher_is_better: bool) -> float:
    """Distance to the simulator's oracle on the same rows (NaN without ground truth)."""
    try:
        value = float(tags.get(f"metric.{metric}", "nan"))
        oracle = float(tags.get(f"metric.oracle_{metric}", "nan"))
    except ValueError:
        return float("nan")
    return oracle - value if higher_is_better else value - oracle


def _window(text: str) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    start, sep, end = text.partition("..")
    if not sep:
        return None
    try:
        return pd.Timestamp(start), pd.Timestamp(end)
    except ValueError:
        return None


# ---- evaluation ------------------------------------------------------------------------------
def resolve(store: RegistryStore, model: str, version: str | None) -> VersionInfo:
    """The named version of `model`, or its latest one."""
    return store.latest(model) if version is None else store.version(model, version)


def compatibility(store: RegistryStore, spec: ModelSpec, info: VersionInfo) -> Compatibility:
    """What the version declares next to what the spec's feature service serves."""
    return Compatibility(
        feature_service=info.tags.get("feature_service", ""),
        signature=tuple(store.signature_columns(info)),
        service_columns=tuple(service_features(spec.feature_service)),
    )


def evaluate_on(
    store: RegistryStore, spec: ModelSpec, info: VersionInfo, rows: pd.DataFrame, rows_of: str
) -> Evaluation:
    """Score one version on the given test rows (which must hold its feature columns)."""
    if LABEL not in rows.columns:
        raise ValueError(f"model {info.model}: version {rows_of}'s test rows have no {LABEL}")
    features = store.scorer(info).features
    missing = [f for f in features if f not in rows.columns]
    if missing:
        raise ValueError(
            f"model {info.model} version {info.version} needs column(s) "
            f"{', '.join(missing[:5])} absent from version {rows_of}'s test rows"
        )
    predictions = store.score(info, rows)
    labels = rows[LABEL].to_numpy(float)
    return Evaluation(
        version=info.version,
        metrics=metrics_on(spec, labels, predictions, rows),
        rows=len(rows),
        rows_of=rows_of,
        features=tuple(features),
    )


def assess(store: RegistryStore, spec: ModelSpec, info: VersionInfo) -> Assessment:
    """Run the gate for a candidate: both the candidate and the current champion are scored on
    the candidate's own logged test rows, so the comparison is on exactly the same rows."""
    aliases = store.aliases(spec.name)
    compat = compatibility(store, spec, info)
    champion_version = aliases.get(CHAMPION)
    champion = (
        store.version(spec.name, champion_version)
        if champion_version and champion_version != info.version
        else None
    )
    unscored = Evaluation(info.version, {}, 0, info.version)
    probe = decide(spec, unscored, None, compat)
    if not probe.compatible:  # nothing to score: the gate refuses on compatibility alone
        return Assessment(info, champion, unscored, None, probe)
    rows = store.test_set(info)
    candidate = evaluate_on(store, spec, info, rows, info.version)
    champion_eval = None
    if champion is not None:
        champion_eval = _champion_evaluation(store, spec, champion, info, rows)
    decision = decide(spec, candidate, champion_eval, compat)
    return Assessment(info, champion, candidate, champion_eval, decision)


def _champion_evaluation(
    store: RegistryStore,
    spec: ModelSpec,
    champion: VersionInfo,
    candidate: VersionInfo,
    rows: pd.DataFrame,
) -> Evaluation:
    notes = [n for n in [overlap_note(spec, champion, candidate)] if n]
    features = store.scorer(champion).features
    missing = [f for f in features if f not in rows.columns]
    if not missing:
        scored = evaluate_on(store, spec, champion, rows, candidate.version)
        return replace(scored, notes=tuple(notes))
    # e.g. a feature-service upgrade: the old champion cannot be scored on the new rows
    notes.append(
        f"champion v{champion.version} needs {len(missing)} column(s) absent from the "
        f"candidate's test rows ({', '.join(missing[:5])}): compared by its recorded metrics"
    )
    recorded = {
        key.removeprefix("metric."): champion.metric(key.removeprefix("metric."))
        for key in champion.tags
        if key.startswith("metric.")
    }
    rows_recorded = recorded.get("rows", float("nan"))
    return Evaluation(
        version=champion.version,
        metrics=recorded,
        rows=int(rows_recorded) if np.isfinite(rows_recorded) else 0,
        rows_of=champion.version,
        features=tuple(features),
        rescored=False,
        notes=tuple(notes),
    )


# ---- decisions -------------------------------------------------------------------------------
def promote(
    store: RegistryStore,
    spec: ModelSpec,
    version: str | None = None,
    *,
    force: bool = False,
    reason: str | None = None,
    by: str | None = None,
) -> Decision:
    """Run the gate and promote the version (default: the latest) to `champion` if it passes,
    or regardless with `force` and a non-empty `reason`. Every outcome is tagged on the version
    and appended to the audit trail; a refusal leaves the aliases untouched."""
    model = spec.name
    note = (reason or "").strip()
    if force and not note:
        raise ValueError(f"model {model}: a forced promotion needs a non-empty reason")
    info = resolve(store, model, version)
    before = store.aliases(model).get(CHAMPION, "")
    if before == info.version:
        raise ValueError(f"model {model} version {info.version} is already the champion")
    decision = _require_compatible(assess(store, spec, info).decision, info, spec)
    if force:
        decision = replace(
            decision,
            promote=True,
            forced=True,
            reasons=[*decision.reasons, f"note: forced by {by or 'an operator'}: {note}"],
        )
    if decision.promote:
        move_champion(store, model, info.version)
    action: Action = "force" if decision.forced else "promote" if decision.promote else "refuse"
    after = info.version if decision.promote else before
    _record(store, info, action, decision.reasons, before, after, by, note)
    log.info(decision.summary(model))
    return decision


def stage(
    store: RegistryStore, spec: ModelSpec, version: str | None = None, *, by: str | None = None
) -> Decision:
    """Point `challenger` at a version for review, whatever the gate says about its metrics
    (the decision is returned and recorded); an unservable version is refused."""
    model = spec.name
    info = resolve(store, model, version)
    champion = store.aliases(model).get(CHAMPION, "")
    if champion == info.version:
        raise ValueError(f"model {model} version {info.version} is already the champion")
    decision = _require_compatible(assess(store, spec, info).decision, info, spec)
    store.set_alias(model, CHALLENGER, info.version)
    verdict = "the gate would promote it" if decision.promote else "the gate would refuse it"
    decision = replace(
        decision, reasons=[*decision.reasons, f"note: staged as challenger; {verdict}"]
    )
    _record(store, info, "stage", decision.reasons, champion, champion, by, "")
    return decision


def rollback(
    store: RegistryStore, model: str, *, by: str | None = None, reason: str = ""
) -> AuditEntry:
    """Make the previous champion the champion again. `previous` is cleared afterwards, so a
    second rollback fails instead of bouncing back to the version just rolled back."""
    store.require_model(model)
    aliases = store.aliases(model)
    target = aliases.get(PREVIOUS)
    if not target:
        raise LookupError(f"model {model} has no previous champion to roll back to")
    current = aliases.get(CHAMPION, "")
    if target == current:
        raise ValueError(f"model {model}: previous and champion are both version {target}")
    info = store.version(model, target)
    store.set_alias(model, CHAMPION, target)  # one call: the champion is never missing
    store.delete_alias(model, PREVIOUS)
    reasons = [f"rollback: champion v{current or '(none)'} replaced by previous v{target}"]
    entry = _record(store, info, "rollback", reasons, current, target, by, reason.strip())
    if current:
        store.set_tags(
            model,
            current,
            {"gate.decision": "rolled_back", "gate.at": entry.at, "gate.reasons": reasons[0]},
        )
    return entry


def move_champion(store: RegistryStore, model: str, version: str) -> None:
    """`previous` <- old champion, then `champion` <- version; `previous` is restored if the
    champion move fails, so the registry is as it was. A promoted challenger is un-staged."""
    aliases = store.aliases(model)
    old_champion, old_previous = aliases.get(CHAMPION), aliases.get(PREVIOUS)
    if old_champion:
        store.set_alias(model, PREVIOUS, old_champion)
    try:
        store.set_alias(model, CHAMPION, version)
    except Exception:
        if old_champion:
            _restore_previous(store, model, old_previous)
        raise
    if aliases.get(CHALLENGER) == version:
        store.delete_alias(model, CHALLENGER)


def _restore_previous(store: RegistryStore, model: str, old_previous: str | None) -> None:
    try:
        if old_previous:
            store.set_alias(model, PREVIOUS, old_previous)
        else:
            store.delete_alias(model, PREVIOUS)
    except Exception:  # the original error matters more; the champion is intact either way
        log.exception("model %s: could not restore the previous alias", model)


def _require_compatible(decision: Decision, info: VersionInfo, spec: ModelSpec) -> Decision:
    if not decision.compatible:
        raise IncompatibleVersionError(
            f"model {info.model} version {info.version} cannot be served through "
            f"{spec.feature_service}: {'; '.join(decision.failures)}"
        )
    return decision


_DECISION_TAG = {
    "promote": "promoted",
    "refuse": "refused",
    "force": "forced",
    "stage": "staged",
    "rollback": "rollback",
}


def _record(
    store: RegistryStore,
    info: VersionInfo,
    action: Action,
    reasons: list[str],
    before: str,
    after: str,
    by: str | None,
    note: str,
) -> AuditEntry:
    entry = AuditEntry(
        model=info.model,
        version=info.version,
        action=action,
        reasons=reasons,
        champion_before=before,
        champion_after=after,
        by=by or "",
        note=note,
        at=now_iso(),
    )
    tags = {
        "gate.decision": _DECISION_TAG[action],
        "gate.reasons": "\n".join(reasons)[:TAG_LIMIT],
        "gate.at": entry.at,
        "gate.champion_before": before,
    }
    if by:
        tags["gate.by"] = by
    if note:
        tags["gate.note"] = note[:TAG_LIMIT]
    store.set_tags(info.model, info.version, tags)
    store.record(entry)
    return entry


# ---- reads -----------------------------------------------------------------------------------
def compare(
    store: RegistryStore,
    spec: ModelSpec,
    versions: Iterable[str],
    rows_of: str | None = None,
) -> Comparison:
    """Metrics of the versions on one version's test rows (default: the last one given)."""
    infos = [store.version(spec.name, v) for v in versions]
    if not infos:
        raise ValueError(f"model {spec.name}: name at least one version to compare")
    source = infos[-1] if rows_of is None else store.version(spec.name, rows_of)
    rows = store.test_set(source)
    metrics = {
        info.version: dict(evaluate_on(store, spec, info, rows, source.version).metrics)
        for info in infos
    }
    return Comparison(spec.name, source.version, len(rows), metrics)


def history(store: RegistryStore, model: str) -> list[AuditEntry]:
    """Every recorded decision about `model`, oldest first."""
    entries = store.audit(model)
    if not entries:
        store.require_model(model)
    return entries


def overview(store: RegistryStore, specs: Mapping[str, ModelSpec]) -> list[ModelRow]:
    """One row per registered model (spec order first): champion, metric, oracle gap."""
    registered = store.models()
    names = [n for n in specs if n in registered] + [n for n in registered if n not in specs]
    rows = []
    for name in names:
        aliases = store.aliases(name)
        versions = store.versions(name)
        champion = next((v for v in versions if v.version == aliases.get(CHAMPION)), None)
        spec = specs.get(name)
        shown = champion or (versions[-1] if versions else None)
        tags = shown.tags if shown else {}
        metric = tags.get("primary_metric") or (spec.primary_metric if spec else "roc_auc")
        higher = metric != "mae"
        value = champion.metric(metric) if champion else float("nan")
        rows.append(
            ModelRow(
                model=name,
                versions=len(versions),
                champion=champion,
                challenger=aliases.get(CHALLENGER, ""),
                previous=aliases.get(PREVIOUS, ""),
                primary_metric=metric,
                primary=value,
                oracle_gap=oracle_gap(tags, metric, higher) if champion else float("nan"),
                feature_service=tags.get("feature_service")
                or (spec.feature_service if spec else ""),
            )
        )
    return rows
