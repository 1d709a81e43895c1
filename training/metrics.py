"""Evaluation metrics (pure): classification quality, calibration, lift; regression errors."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

CLASSIFICATION = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_at_10pct")
REGRESSION = ("mae", "rmse", "total_error_pct", "decile_calibration_error")


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Population-weighted mean |observed rate - mean prediction| over equal-count bins."""
    order = np.argsort(p, kind="stable")
    chunks = np.array_split(order, bins)
    total = 0.0
    for chunk in chunks:
        if len(chunk):
            total += len(chunk) * abs(float(y[chunk].mean()) - float(p[chunk].mean()))
    return total / len(p)


def lift_at(y: np.ndarray, p: np.ndarray, share: float = 0.10) -> float:
    """Positive rate among the top `share` of scores over the overall positive rate."""
    k = max(1, int(round(share * len(p))))
    top = np.argsort(-p, kind="stable")[:k]
    base = float(y.mean())
    return float(y[top].mean()) / base if base > 0 else float("nan")


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The platform's test metrics of probabilities `p` against 0/1 labels `y`."""
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    if len(np.unique(y)) < 2:
        raise ValueError("metrics need both classes in the labels")
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "lift_at_10pct": lift_at(y, p),
        "positive_rate": float(y.mean()),
        "rows": float(len(y)),
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, total error (% of actual) and decile calibration of value predictions."""
    y = np.asarray(y, dtype=float)
    pred = np.asarray(pred, dtype=float)
    order = np.argsort(pred, kind="stable")
    deciles = np.array_split(order, 10)
    gaps = [abs(pred[d].mean() - y[d].mean()) for d in deciles if len(d)]
    return {
        "mae": float(np.mean(np.abs(pred - y))),
        "rmse": float(np.sqrt(np.mean((pred - y) ** 2))),
        "total_error_pct": float(100 * (pred.sum() - y.sum()) / max(y.sum(), 1e-9)),
        "decile_calibration_error": float(np.mean(gaps)),
        "mean_actual": float(y.mean()),
        "rows": float(len(y)),
    }


def decile_table(y: np.ndarray, pred: np.ndarray) -> list[dict[str, float]]:
    """Mean prediction next to mean actual per decile of the prediction."""
    order = np.argsort(pred, kind="stable")
    return [
        {"decile": float(i + 1), "predicted": float(pred[d].mean()), "actual": float(y[d].mean())}
        for i, d in enumerate(np.array_split(order, 10))
        if len(d)
    ]
