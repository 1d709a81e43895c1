"""Scoring maths, as plain functions shared by the service and batch scoring: feature matrix ->
score, percentile (against the champion's test-population distribution), band, and the top
reasons from XGBoost's own per-feature contributions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BANDS = (("high", 80.0), ("medium", 50.0), ("low", 0.0))
TOP_REASONS = 5


def percentiles(scores: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Percentile 0-100 of each score within a distribution given by its 101 quantiles."""
    q = np.asarray(quantiles, dtype=float)
    steps = np.linspace(0.0, 100.0, len(q))
    # Flat stretches of the quantile curve (many equal scores) map to their middle.
    low = np.interp(scores, q, steps, left=0.0, right=100.0)
    high = 100.0 - np.interp(-np.asarray(scores), -q[::-1], steps, left=0.0, right=100.0)
    return np.clip((low + high) / 2.0, 0.0, 100.0)


def bands(pct: np.ndarray) -> np.ndarray:
    """low / medium / high by percentile (high = top 20%, medium = next 30%)."""
    out = np.full(len(pct), "low", dtype=object)
    out[pct >= 50.0] = "medium"
    out[pct >= 80.0] = "high"
    return out


def top_reasons(
    contributions: np.ndarray, values: np.ndarray, k: int = TOP_REASONS
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the `k` features with the largest |contribution| per row (bias excluded),
    and those contributions, most important first."""
    parts = contributions[:, :-1]
    k = min(k, parts.shape[1])
    idx = np.argpartition(-np.abs(parts), k - 1, axis=1)[:, :k]
    picked = np.take_along_axis(parts, idx, axis=1)
    order = np.argsort(-np.abs(picked), axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    return idx, np.take_along_axis(parts, idx, axis=1)


@dataclass(frozen=True)
class ScoreTable:
    """Scores of many rows by one model, with everything a response needs."""

    score: np.ndarray
    percentile: np.ndarray
    band: np.ndarray
    reason_index: np.ndarray  # (rows, k) feature positions
    reason_contribution: np.ndarray  # (rows, k)
    values: np.ndarray  # (rows, features) the inputs, for the reasons' values


def score_matrix(scorer: Any, matrix: np.ndarray, reasons: bool = True) -> ScoreTable:
    """Score a float64 matrix (columns = the scorer's features) with one model."""
    scores = scorer.predict_matrix(matrix)
    pct = percentiles(scores, np.asarray(scorer.meta["score_quantiles"]))
    n = len(scores)
    contributions = scorer.contributions(matrix) if reasons and n else None
    if contributions is not None:
        idx, contrib = top_reasons(contributions, matrix)
    else:
        idx = np.zeros((n, 0), dtype=np.int64)
        contrib = np.zeros((n, 0))
    return ScoreTable(scores, pct, bands(pct), idx, contrib, matrix)


def concat_tables(tables: Sequence[ScoreTable]) -> ScoreTable:
    """One score table from the tables of consecutive row blocks (in order)."""
    fields = ("score", "percentile", "band", "reason_index", "reason_contribution", "values")
    return ScoreTable(*(np.concatenate([getattr(t, f) for t in tables]) for f in fields))


def row_results(
    table: ScoreTable, rows: Sequence[int], features: list[str], name: str, version: str
) -> list[dict[str, Any]]:
    """One model's answer for each of `rows` of a score table (converted to Python numbers
    in bulk, which is what makes scoring a whole snapshot's answers cheap)."""
    picked = np.asarray(rows, dtype=np.int64)
    scores = table.score[picked].tolist()
    percentiles_ = table.percentile[picked].tolist()
    band = table.band[picked].tolist()
    index = table.reason_index[picked]
    contributions = table.reason_contribution[picked].tolist()
    values = np.take_along_axis(table.values[picked], index, axis=1).tolist()
    out = []
    for r in range(len(picked)):
        reasons = [
            {"feature": features[j], "value": None if v != v else v, "contribution": c}
            for j, v, c in zip(index[r].tolist(), values[r], contributions[r], strict=True)
        ]
        out.append(
            {
                "score": scores[r],
                "percentile": round(percentiles_[r], 2),
                "band": str(band[r]),
                "model": name,
                "version": version,
                "reasons": reasons,
            }
        )
    return out


def row_result(
    table: ScoreTable, row: int, features: list[str], name: str, version: str
) -> dict[str, Any]:
    """One model's answer for one row of a score table."""
    return row_results(table, [row], features, name, version)[0]
