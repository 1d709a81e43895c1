"""Test-set evaluation next to the oracle, plots, and importance summaries.

The simulator's ground truth is read only here: when `$CLV_HOME/truth` exists, every metric is
also computed for the true probabilities (or expected values) of the same rows, as `oracle_*`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from matplotlib.figure import Figure  # Figure objects draw headless, with no global state
from sklearn.metrics import precision_recall_curve, roc_curve

from training.metrics import (
    classification_metrics,
    decile_table,
    expected_roc_auc,
    gap_noise_sd,
    regression_metrics,
)
from training.specs import ModelSpec

TRUTH_COLUMN = {"clv": "expected_revenue"}
BREAKDOWN_TRUTH = {"cross_sell": "cross_sell_probability", "upsell": "upsell_probability"}


def truth_for(spec: ModelSpec, keys: pd.DataFrame, truth_dir: Path | None) -> pd.DataFrame | None:
    """Ground truth aligned to `keys` (None when there is no truth for this model)."""
    if truth_dir is None or spec.label == "table":
        return None
    path = truth_dir / f"{spec.label}.parquet"
    if not path.exists():
        return None
    truth = pd.read_parquet(path)
    if spec.entity == "dormant":
        entity_id = np.where(keys["lead_id"] != "", keys["lead_id"], keys["customer_id"])
        kind = np.where(keys["lead_id"] != "", "lead", "customer")
        left = pd.DataFrame({"entity_kind": kind, "entity_id": entity_id, "cutoff": keys["cutoff"]})
        on = ["entity_kind", "entity_id", "cutoff"]
    else:
        left = keys[["customer_id", "cutoff"]]
        on = ["customer_id", "cutoff"]
    return left.merge(truth, on=on, how="left")  # a left merge keeps the keys' order


# The feature ceiling's learner: boosted trees fitted to the true log-odds (a regression on
# exact targets needs no tuning to speak for the feature columns).
CEILING_PARAMS = {
    "objective": "reg:squarederror",
    "tree_method": "hist",
    "max_depth": 6,
    "learning_rate": 0.05,
    "subsample": 0.8,
    "seed": 0,
    "nthread": 2,
}
CEILING_ROUNDS = 300


def feature_ceiling(X_fit: pd.DataFrame, truth_fit: np.ndarray, X_test: pd.DataFrame) -> np.ndarray:
    """Test-row scores of trees fitted to the true probabilities of the fit rows (as log-odds):
    about the best any model reading these feature columns ranks, so a model's gap to the
    oracle splits into information (oracle - ceiling) and learning (ceiling - model)."""
    known = ~np.isnan(truth_fit)
    p = np.clip(truth_fit[known], 1e-6, 1 - 1e-6)
    fit = xgb.DMatrix(X_fit.to_numpy(np.float64)[known], label=np.log(p / (1 - p)))
    booster = xgb.train(CEILING_PARAMS, fit, num_boost_round=CEILING_ROUNDS)
    return np.asarray(
        booster.inplace_predict(X_test.to_numpy(np.float64), validate_features=False), float
    )


def evaluate(
    spec: ModelSpec,
    keys: pd.DataFrame,
    y: np.ndarray,
    pred: np.ndarray,
    truth: pd.DataFrame | None,
) -> dict[str, float]:
    """Test metrics of the model and, when truth is known, of the oracle on the same rows;
    per breakdown column (cross-sell/upsell, lead/former customer) as well."""
    if spec.objective == "regression":
        out = regression_metrics(y, pred)
        if truth is not None:
            oracle = truth[TRUTH_COLUMN.get(spec.label, "probability")].to_numpy(float)
            out.update({f"oracle_{k}": v for k, v in regression_metrics(y, oracle).items()})
        return out
    out = classification_metrics(y, pred)
    oracle = None
    if truth is not None and truth["probability"].notna().all():
        oracle = truth["probability"].to_numpy(float)
        out.update({f"oracle_{k}": v for k, v in classification_metrics(y, oracle).items()})
        out["oracle_gap_roc_auc"] = out["oracle_roc_auc"] - out["roc_auc"]
        # The same comparison without the luck of this test set's labels.
        out["expected_roc_auc"] = expected_roc_auc(pred, oracle)
        out["oracle_expected_roc_auc"] = expected_roc_auc(oracle, oracle)
        out["expected_gap_roc_auc"] = out["oracle_expected_roc_auc"] - out["expected_roc_auc"]
        out["gap_noise_sd_roc_auc"] = gap_noise_sd(pred, oracle)
    for column in spec.breakdown:
        if column in ("lead", "former_customer"):
            mask = keys[column].to_numpy(float) == 1
            sub_y, sub_p = y[mask], pred[mask]
            sub_o = oracle[mask] if oracle is not None else None
        else:
            mask = np.ones(len(y), dtype=bool)
            sub_y, sub_p = keys[column].to_numpy(float), pred
            sub_o = (
                truth[BREAKDOWN_TRUTH[column]].to_numpy(float)
                if truth is not None and column in BREAKDOWN_TRUTH
                else None
            )
        if len(np.unique(sub_y)) < 2:
            continue
        part = classification_metrics(sub_y, sub_p)
        out[f"{column}_roc_auc"] = part["roc_auc"]
        out[f"{column}_positive_rate"] = part["positive_rate"]
        if sub_o is not None:
            out[f"oracle_{column}_roc_auc"] = classification_metrics(sub_y, sub_o)["roc_auc"]
    return out


def classification_plots(y: np.ndarray, pred: np.ndarray, oracle: np.ndarray | None, folder: Path):
    """ROC, precision-recall, calibration and cumulative-gains plots (model vs oracle)."""
    folder.mkdir(parents=True, exist_ok=True)
    curves = [("model", pred)] + ([("oracle", oracle)] if oracle is not None else [])
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    for name, p in curves:
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend()
    fig.savefig(folder / "roc.png", dpi=90, bbox_inches="tight")

    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    for name, p in curves:
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(recall, precision, label=name)
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    ax.legend()
    fig.savefig(folder / "precision_recall.png", dpi=90, bbox_inches="tight")

    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    for name, p in curves:
        order = np.argsort(p)
        bins = np.array_split(order, 10)
        ax.plot([p[b].mean() for b in bins], [y[b].mean() for b in bins], "o-", label=name)
    top = max(float(pred.max()), float(y.mean()) * 2)
    ax.plot([0, top], [0, top], "k:", lw=1)
    ax.set(xlabel="mean predicted", ylabel="observed rate", title="Calibration (deciles)")
    ax.legend()
    fig.savefig(folder / "calibration.png", dpi=90, bbox_inches="tight")

    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    for name, p in curves:
        order = np.argsort(-p)
        gains = np.cumsum(y[order]) / max(y.sum(), 1)
        ax.plot(np.arange(1, len(y) + 1) / len(y), gains, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="share contacted", ylabel="share of positives", title="Cumulative gains")
    ax.legend()
    fig.savefig(folder / "cumulative_gains.png", dpi=90, bbox_inches="tight")


def regression_plots(y: np.ndarray, predictions: dict[str, np.ndarray], folder: Path) -> None:
    """Decile calibration of each value model next to the actual revenue."""
    folder.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    for name, pred in predictions.items():
        table = decile_table(y, pred)
        ax.plot([r["predicted"] for r in table], [r["actual"] for r in table], "o-", label=name)
    top = float(max(y.max(), max(p.max() for p in predictions.values())))
    ax.plot([0, top], [0, top], "k:", lw=1)
    ax.set(xlabel="mean predicted 12-month revenue", ylabel="mean actual", title="Deciles")
    ax.legend()
    fig.savefig(folder / "decile_calibration.png", dpi=90, bbox_inches="tight")


def importance_tables(
    feature_names: list[str], gain: dict[str, float], contributions: np.ndarray
) -> pd.DataFrame:
    """Gain importance and mean |contribution| (SHAP-style) per feature, most important first."""
    mean_abs = np.abs(contributions[:, :-1]).mean(axis=0)
    mean_signed = contributions[:, :-1].mean(axis=0)
    table = pd.DataFrame(
        {
            "feature": feature_names,
            "gain": [gain.get(f, 0.0) for f in feature_names],
            "mean_abs_contribution": mean_abs,
            "mean_contribution": mean_signed,
        }
    )
    return table.sort_values("mean_abs_contribution", ascending=False).reset_index(drop=True)


def importance_plot(table: pd.DataFrame, folder: Path, top: int = 20) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    head = table.head(top).iloc[::-1]
    fig = Figure(figsize=(6, 0.3 * len(head) + 1))
    ax = fig.subplots()
    ax.barh(head["feature"], head["mean_abs_contribution"])
    ax.set(xlabel="mean |contribution| (log-odds or value)", title="Feature contributions")
    fig.savefig(folder / "contributions.png", dpi=90, bbox_inches="tight")
