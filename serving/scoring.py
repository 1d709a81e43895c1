"""Scoring maths, as plain functions shared by the service and batch scoring: feature matrix ->
score, percentile (against the champion's test-population distribution), band, and the top
reasons from XGBoost's own per-feature contributions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xgboost as xgb

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
    if reasons and scorer.booster is not None and n:
        # Saabas-style contributions (XGBoost's approx_contribs): linear in tree depth, where
        # exact TreeSHAP is quadratic and took seconds per thousand rows on deep boosters.
        contributions = scorer.booster.predict(
            xgb.DMatrix(matrix), pred_contribs=True, approx_contribs=True, validate_features=False
        )
        idx, contrib = top_reasons(contributions, matrix)
    else:
        idx = np.zeros((n, 0), dtype=np.int64)
        contrib = np.zeros((n, 0))
    return ScoreTable(scores, pct, bands(pct), idx, contrib, matrix)


def row_result(
    table: ScoreTable, row: int, features: list[str], name: str, version: str
) -> dict[str, Any]:
    """One model's answer for one row of a score table."""
    reasons = []
    for j, c in zip(table.reason_index[row], table.reason_contribution[row], strict=True):
        value = float(table.values[row, j])
        reasons.append(
            {
                "feature": features[j],
                "value": None if np.isnan(value) else value,
                "contribution": float(c),
            }
        )
    return {
        "score": float(table.score[row]),
        "percentile": round(float(table.percentile[row]), 2),
        "band": str(table.band[row]),
        "model": name,
        "version": version,
        "reasons": reasons,
    }
