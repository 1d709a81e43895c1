"""Evaluation metrics (pure): classification quality, calibration, lift; regression errors."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
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


def expected_roc_auc(score: np.ndarray, probability: np.ndarray) -> float:
    """The ROC-AUC `score` is expected to get when each row's label is drawn from its true
    `probability`: expected ranked pairs (positive above negative, ties counting half) over
    expected pairs. It is what a realised test AUC estimates, without the luck of the labels,
    so a gap to the oracle measured this way is the model's, not the draw's."""
    score = np.asarray(score, dtype=float)
    p = np.asarray(probability, dtype=float)
    q = 1.0 - p
    order = np.argsort(score, kind="stable")
    _, starts = np.unique(score[order], return_index=True)
    p_tie = np.add.reduceat(p[order], starts)
    q_tie = np.add.reduceat(q[order], starts)
    pq_tie = np.add.reduceat((p * q)[order], starts)
    below = np.cumsum(q_tie) - q_tie  # expected negatives scored strictly lower
    ranked = np.sum(p_tie * below) + 0.5 * (np.sum(p_tie * q_tie) - np.sum(pq_tie))
    pairs = p.sum() * q.sum() - np.sum(p * q)  # a row is never paired with itself
    if pairs <= 0:
        raise ValueError("the expected AUC needs probabilities strictly between 0 and 1")
    return float(ranked / pairs)


def gap_noise_sd(
    score: np.ndarray, probability: np.ndarray, draws: int = 200, seed: int = 0
) -> float:
    """Standard deviation of the realised test-AUC gap (oracle minus `score`) over label sets
    redrawn from the true probabilities: how far one test set's gap can stray by luck."""
    p = np.asarray(probability, dtype=float)
    # AUC from mid-ranks: (rank sum of the positives - n1 (n1 + 1) / 2) / (n1 n0).
    ranks = np.stack([rankdata(p), rankdata(np.asarray(score, dtype=float))]).T
    rng = np.random.default_rng(seed)
    gaps: list[np.ndarray] = []
    for start in range(0, draws, 25):  # 25 label sets at a time keeps memory small at scale
        labels = (rng.random((min(25, draws - start), len(p))) < p).astype(np.float32)
        n1 = labels.sum(axis=1, keepdims=True).astype(float)
        n0 = len(p) - n1
        auc = (labels @ ranks - n1 * (n1 + 1) / 2) / np.maximum(n1 * n0, 1.0)
        keep = ((n1 > 0) & (n0 > 0))[:, 0]
        gaps.append(auc[keep, 0] - auc[keep, 1])
    gap = np.concatenate(gaps)
    return float(np.std(gap)) if len(gap) > 1 else float("nan")


def expected_gap_text(metrics: dict[str, float]) -> str:
    """'gap+-noise' of a run's expected test-AUC gap to the oracle, '-' when it has none
    (no ground truth, or a regression)."""
    gap = metrics.get("expected_gap_roc_auc")
    if gap is None:
        return "-"
    return f"{gap:.3f}+-{metrics.get('gap_noise_sd_roc_auc', float('nan')):.3f}"


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
