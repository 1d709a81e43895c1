"""The inputs of a linear booster: each feature put on a common footing, learned from the
training rows and shipped inside the model.

A tree reads a feature by its order alone; a linear model reads its size, so heavy-tailed
counts need a log, every column a common scale, and a missing value a meaning. Per feature:
- `log1p` when it is never negative in training and right-skewed (skewness above 1);
- then standardised to mean 0 and standard deviation 1 on the training rows;
- a missing value becomes 0 (the training mean), and a feature that was missing in training
  also gets an indicator column `<name>__missing`, so absence can carry its own weight.

Pure functions over plain JSON-able parameters, shared by training, the pyfunc model and
serving.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

SKEW_FOR_LOG = 1.0
MISSING_SUFFIX = "__missing"


def fit_inputs(X: pd.DataFrame) -> dict[str, Any]:
    """The transform of every column of `X` (the training rows), as JSON-able parameters."""
    columns = []
    for name in X.columns:
        values = X[name].to_numpy(np.float64)
        seen = values[~np.isnan(values)]
        log = bool(len(seen) > 2 and seen.min() >= 0 and pd.Series(seen).skew() > SKEW_FOR_LOG)
        scaled = np.log1p(seen) if log else seen
        mean = float(scaled.mean()) if len(scaled) else 0.0
        std = float(scaled.std()) if len(scaled) else 0.0
        columns.append(
            {
                "name": str(name),
                "log": log,
                "mean": mean,
                "std": std if std > 0 else 1.0,
                "indicator": bool(0 < len(seen) < len(values)),
            }
        )
    return {"columns": columns}


def input_names(inputs: dict[str, Any]) -> list[str]:
    """Names of the linear booster's columns: each feature, then the missing indicators."""
    cols = inputs["columns"]
    return [c["name"] for c in cols] + [c["name"] + MISSING_SUFFIX for c in cols if c["indicator"]]


def source_of(inputs: dict[str, Any]) -> np.ndarray:
    """For each linear booster column, the position of the feature it comes from."""
    cols = inputs["columns"]
    return np.array(
        list(range(len(cols))) + [i for i, c in enumerate(cols) if c["indicator"]], dtype=np.int64
    )


def transform(inputs: dict[str, Any], matrix: np.ndarray) -> np.ndarray:
    """The linear booster's columns of a float64 matrix whose columns are the features."""
    cols = inputs["columns"]
    if matrix.shape[1] != len(cols):
        raise ValueError(f"expected {len(cols)} feature columns, got {matrix.shape[1]}")
    missing = np.isnan(matrix)
    logged = np.array([c["log"] for c in cols], dtype=bool)
    values = matrix.copy()
    if logged.any():
        values[:, logged] = np.log1p(np.clip(values[:, logged], 0.0, None))
    mean = np.array([c["mean"] for c in cols])
    std = np.array([c["std"] for c in cols])
    values = (values - mean) / std
    values[missing] = 0.0
    flags = np.array([c["indicator"] for c in cols], dtype=bool)
    return np.hstack([values, missing[:, flags].astype(np.float64)])


def fold_contributions(inputs: dict[str, Any], contributions: np.ndarray) -> np.ndarray:
    """Per-feature contributions (plus the bias, last) from those of the booster's columns:
    a feature's indicator column counts towards that feature."""
    n_features = len(inputs["columns"])
    parts, bias = contributions[:, :-1], contributions[:, -1:]
    folded = np.zeros((contributions.shape[0], n_features))
    np.add.at(folded.T, source_of(inputs), parts.T)
    return np.hstack([folded, bias])


def coefficients(booster: Any) -> tuple[np.ndarray, float]:
    """Weights (one per booster column) and intercept of a trained `gblinear` booster; the
    intercept includes the base score, so the margin is `columns @ weights + intercept`."""
    model = json.loads(booster.save_raw("json"))["learner"]
    weights = np.asarray(model["gradient_booster"]["model"]["weights"], dtype=np.float64)
    base = float(str(model["learner_model_param"]["base_score"]).strip("[]"))
    objective = model["objective"]["name"]
    base_margin = float(np.log(base / (1.0 - base))) if objective == "binary:logistic" else base
    return weights[:-1], float(weights[-1]) + base_margin


def margin(
    inputs: dict[str, Any], linear: tuple[np.ndarray, float], matrix: np.ndarray
) -> np.ndarray:
    """The booster's margin (log-odds for a classifier) of a feature matrix."""
    weights, intercept = linear
    return transform(inputs, matrix) @ weights + intercept


def contributions(
    inputs: dict[str, Any], linear: tuple[np.ndarray, float], matrix: np.ndarray
) -> np.ndarray:
    """Exact per-feature contributions to the margin, the intercept last (they sum to it)."""
    weights, intercept = linear
    parts = transform(inputs, matrix) * weights
    bias = np.full((len(matrix), 1), intercept)
    return fold_contributions(inputs, np.hstack([parts, bias]))
