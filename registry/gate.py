"""The promotion gate (pure): may this candidate version replace the champion?

Rules, in the order they are reported:

1. compatibility: the candidate's feature service is the spec's, and its input signature lists
   exactly the feature service's columns in order (otherwise serving could not feed it); an
   incompatible candidate is refused on these lines alone (`compatible=False`);
2. absolute floors: the primary metric against `gate.primary_floor` (a minimum for AUC, a
   maximum for MAE) and, for classifiers, the ECE against the `gate.max_ece` ceiling;
3. for `gate.beat_baseline`, a MAE below the naive baseline's on the same rows;
4. non-inferiority against the champion on the primary metric, within `gate.margin`
   (absolute for AUC, relative for MAE). A first model with no champion passes the floors only.

Every reason is a readable line with the numbers, prefixed `pass`, `fail` or `note`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from training.specs import ModelSpec

PASS, FAIL, NOTE = "pass", "fail", "note"
Check = tuple[str, str]  # (PASS | FAIL | NOTE, text)


@dataclass(frozen=True)
class Evaluation:
    """Test metrics of one version, and on which rows they were measured."""

    version: str
    metrics: Mapping[str, float]
    rows: int
    rows_of: str  # the version whose test rows were scored
    features: tuple[str, ...] = ()
    rescored: bool = True  # False: the metrics recorded at training time, on its own rows
    notes: tuple[str, ...] = ()  # caveats about this evaluation, reported as `note` lines


@dataclass(frozen=True)
class Compatibility:
    """What a candidate declares, next to what its feature service serves."""

    feature_service: str  # the candidate version's `feature_service` tag
    signature: tuple[str, ...]  # input columns of its MLflow signature, in order
    service_columns: tuple[str, ...]  # columns the spec's feature service serves, in order


@dataclass(frozen=True)
class Decision:
    """The gate's verdict: `promote` and one reason line per rule checked."""

    promote: bool
    reasons: list[str] = field(default_factory=list)
    version: str = ""  # the candidate's version
    compatible: bool = True  # False: the version cannot be served at all (not forceable)
    forced: bool = False

    @property
    def failures(self) -> list[str]:
        return [r.removeprefix(f"{FAIL}: ") for r in self.reasons if r.startswith(f"{FAIL}: ")]

    def summary(self, model: str) -> str:
        """One line for logs and the command line."""
        version = self.version or "?"
        if self.forced:
            return f"{model} version {version}: promoted by force"
        if self.promote:
            return f"{model} version {version}: promoted"
        failed = self.failures
        listed = "; ".join(failed)
        return f"{model} version {version}: refused, {len(failed)} check(s) failed: {listed}"


def decide(
    spec: ModelSpec,
    candidate: Evaluation,
    champion: Evaluation | None,
    compatibility: Compatibility,
) -> Decision:
    """Apply the spec's gate to a candidate (and the champion scored on the same rows)."""
    compat = _compatibility(spec, compatibility)
    if any(kind == FAIL for kind, _ in compat):  # unservable: its metrics are beside the point
        reasons = [f"{kind}: {text}" for kind, text in compat]
        return Decision(False, reasons, candidate.version, compatible=False)
    checks = [
        *compat,
        *_floors(spec, candidate),
        *_baseline(spec, candidate),
        *_champion(spec, candidate, champion),
    ]
    reasons = [f"{kind}: {text}" for kind, text in checks]
    passed = all(kind != FAIL for kind, _ in checks)
    return Decision(passed, reasons, candidate.version)


def _compatibility(spec: ModelSpec, info: Compatibility) -> list[Check]:
    service = spec.feature_service
    checks: list[Check] = []
    if info.feature_service == service:
        checks.append((PASS, f"feature service {service} is the spec's"))
    else:
        checks.append(
            (
                FAIL,
                f"feature service {info.feature_service or '(none)'} is not the spec's {service}",
            )
        )
    signature, expected = list(info.signature), list(info.service_columns)
    if signature == expected:
        checks.append((PASS, f"input signature has the {len(expected)} columns of {service}"))
        return checks
    missing = [c for c in expected if c not in signature]
    extra = [c for c in signature if c not in expected]
    parts = []
    if missing:
        parts.append(f"missing {_names(missing)}")
    if extra:
        parts.append(f"extra {_names(extra)}")
    if not parts:
        parts.append("same columns in a different order")
    checks.append((FAIL, f"input signature differs from {service}: {'; '.join(parts)}"))
    return checks


def _floors(spec: ModelSpec, candidate: Evaluation) -> list[Check]:
    gate, metric = spec.gate, spec.primary_metric
    checks: list[Check] = []
    value = _metric(candidate, metric)
    on = f"on {candidate.rows:,} rows"
    if gate.primary_floor is not None:
        floor = gate.primary_floor
        if math.isnan(value):
            checks.append((FAIL, f"{metric} is missing or not a number"))
        elif spec.higher_is_better:
            ok = value >= floor
            sign = ">=" if ok else "<"
            checks.append(
                (PASS if ok else FAIL, f"{metric} {_fmt(value)} {sign} floor {floor:g} {on}")
            )
        else:
            ok = value <= floor
            sign = "<=" if ok else ">"
            checks.append(
                (PASS if ok else FAIL, f"{metric} {_fmt(value)} {sign} ceiling {floor:g} {on}")
            )
    if gate.max_ece is not None and spec.objective == "binary":
        ece = _metric(candidate, "ece")
        if math.isnan(ece):
            checks.append((FAIL, "ece (calibration) is missing or not a number"))
        else:
            ok = ece <= gate.max_ece
            sign = "<=" if ok else ">"
            checks.append(
                (PASS if ok else FAIL, f"ece {_fmt(ece)} {sign} ceiling {gate.max_ece:g} {on}")
            )
    return checks


def _baseline(spec: ModelSpec, candidate: Evaluation) -> list[Check]:
    if not spec.gate.beat_baseline:
        return []
    mae, baseline = _metric(candidate, "mae"), _metric(candidate, "baseline_mae")
    if math.isnan(mae) or math.isnan(baseline):
        return [(FAIL, "mae or baseline_mae is missing, so beating the baseline is unproven")]
    ok = mae < baseline
    sign = "<" if ok else ">="
    return [(PASS if ok else FAIL, f"mae {_fmt(mae)} {sign} naive baseline {_fmt(baseline)}")]


def _champion(spec: ModelSpec, candidate: Evaluation, champion: Evaluation | None) -> list[Check]:
    metric, margin = spec.primary_metric, spec.gate.margin
    if champion is None:
        return [(NOTE, "no champion yet: a first model has to pass the floors only")]
    checks: list[Check] = [(NOTE, note) for note in champion.notes]
    if champion.features and candidate.features and champion.features != candidate.features:
        added = [f for f in candidate.features if f not in champion.features]
        dropped = [f for f in champion.features if f not in candidate.features]
        detail = []
        if added:
            detail.append(f"new {_names(added)}")
        if dropped:
            detail.append(f"dropped {_names(dropped)}")
        checks.append(
            (
                NOTE,
                f"champion v{champion.version} uses a different feature list than the "
                f"candidate ({'; '.join(detail) or 'a different order'})",
            )
        )
    ours, theirs = _metric(candidate, metric), _metric(champion, metric)
    if champion.rescored and champion.rows_of == candidate.rows_of:
        where = f"on the same {candidate.rows:,} rows"
    else:
        where = (
            f"(champion's recorded value on its own {champion.rows:,} rows, "
            f"not the candidate's {candidate.rows:,})"
        )
    head = f"{metric} {_fmt(ours)} vs champion v{champion.version} {_fmt(theirs)} {where}"
    if math.isnan(ours) or math.isnan(theirs):
        return [*checks, (FAIL, f"{head}: cannot compare a missing value")]
    if spec.higher_is_better:
        delta = ours - theirs
        ok = delta >= -margin
        if delta >= 0:
            verdict = f"better by {delta:.3f}"
        elif ok:
            verdict = f"worse by {-delta:.3f}, within margin {margin:g}"
        else:
            verdict = f"worse by {-delta:.3f}, beyond margin {margin:g}"
    else:
        relative = (ours - theirs) / theirs if theirs > 0 else (0.0 if ours == theirs else math.inf)
        ok = relative <= margin
        if relative <= 0:
            verdict = f"better by {-relative:.1%}"
        elif ok:
            verdict = f"worse by {relative:.1%}, within margin {margin:.1%}"
        else:
            verdict = f"worse by {relative:.1%}, beyond margin {margin:.1%}"
    return [*checks, (PASS if ok else FAIL, f"{head}: {verdict}")]


def _metric(evaluation: Evaluation, name: str) -> float:
    value = evaluation.metrics.get(name)
    try:
        return float("nan") if value is None else float(value)
    except (TypeError, ValueError):
        return float("nan")


def _fmt(value: float) -> str:
    """AUC-like values with 3 decimals, money-like values with thousands separators."""
    return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"


def _names(names: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
