"""The model objects the platform trains and ships: an XGBoost booster with a probability
calibrator fitted on validation data, following scikit-learn's estimator rules (parameters in
`__init__`, `fit` returns self, learned state ends in `_`).

They save to a folder of plain files (booster JSON + calibrator JSON) that the MLflow pyfunc
wrapper and the serving layer load without unpickling anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from training import linear

BOOSTER_FILE = "booster.json"
META_FILE = "model.json"


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class Calibrator(BaseEstimator):
    """Maps raw booster probabilities to calibrated ones: Platt scaling on the logit
    ('sigmoid'), isotonic regression, or the identity ('none')."""

    def __init__(self, method: str = "sigmoid") -> None:
        self.method = method

    def fit(self, raw: np.ndarray, y: np.ndarray) -> Calibrator:
        if self.method == "sigmoid":
            lr = LogisticRegression(C=1e6, max_iter=1000)
            lr.fit(_logit(raw)[:, None], y)
            self.params_: dict[str, Any] = {
                "a": float(lr.coef_[0, 0]),
                "b": float(lr.intercept_[0]),
            }
        elif self.method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-6, y_max=1 - 1e-6)
            iso.fit(raw, y)
            self.params_ = {
                "x": [float(v) for v in iso.X_thresholds_],
                "y": [float(v) for v in iso.y_thresholds_],
            }
        elif self.method == "none":
            self.params_ = {}
        else:
            raise ValueError(f"unknown calibration method {self.method!r}")
        return self

    def transform(self, raw: np.ndarray) -> np.ndarray:
        return apply_calibration(self.method, self.params_, raw)


def apply_calibration(method: str, params: dict[str, Any], raw: np.ndarray) -> np.ndarray:
    """Calibrated probabilities from raw ones (pure; shared by pyfunc and serving)."""
    raw = np.asarray(raw, dtype=float)
    if method == "sigmoid":
        return 1.0 / (1.0 + np.exp(-(params["a"] * _logit(raw) + params["b"])))
    if method == "isotonic":
        return np.interp(raw, np.asarray(params["x"]), np.asarray(params["y"]))
    return raw


class BoostedModel(BaseEstimator):
    """XGBoost on a fixed feature list, plus a calibrator for classifiers. The booster is
    boosted trees ('gbtree') or a linear model ('gblinear'), which reads its features through
    the transform of `training.linear`, learned on the training rows."""

    def __init__(
        self,
        objective: str = "binary",
        params: dict[str, Any] | None = None,
        num_rounds: int = 200,
        calibration: str = "sigmoid",
        seed: int = 0,
        booster: str = "gbtree",
    ) -> None:
        self.objective = objective
        self.params = params
        self.num_rounds = num_rounds
        self.calibration = calibration
        self.seed = seed
        self.booster = booster

    def _xgb_params(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "objective": "binary:logistic" if self.objective == "binary" else "reg:squarederror",
            "eval_metric": "logloss" if self.objective == "binary" else "mae",
            "seed": self.seed,
            "nthread": 2,
        }
        if self.booster == "gblinear":
            # Coordinate descent is deterministic (the default 'shotgun' updater is not).
            base.update(booster="gblinear", updater="coord_descent", learning_rate=0.5)
        else:
            base["tree_method"] = "hist"
        return {**base, **(self.params or {})}

    def _inputs(self, X: pd.DataFrame) -> np.ndarray:
        """The booster's input columns of `X` (the features themselves for trees)."""
        matrix = X[self.feature_names_].to_numpy(np.float64)
        return matrix if self.inputs_ is None else linear.transform(self.inputs_, matrix)

    def fit(
        self,
        X: pd.DataFrame,
        y: np.ndarray,
        X_valid: pd.DataFrame | None = None,
        y_valid: np.ndarray | None = None,
        trainer: Any = None,
    ) -> BoostedModel:
        """Train the booster on (X, y), in this process or through `trainer` (e.g. a
        `training.distributed.DaskTrainer`); fit the calibrator on the validation rows."""
        self.feature_names_ = list(X.columns)
        self.inputs_ = linear.fit_inputs(X) if self.booster == "gblinear" else None
        values = self._inputs(X)
        names = self.feature_names_ if self.inputs_ is None else linear.input_names(self.inputs_)
        if trainer is not None:
            self.booster_ = trainer.train(self._xgb_params(), values, y, names, self.num_rounds)
        else:
            train = xgb.DMatrix(values, label=y, feature_names=names)
            self.booster_ = xgb.train(self._xgb_params(), train, num_boost_round=self.num_rounds)
        self.linear_ = None if self.inputs_ is None else linear.coefficients(self.booster_)
        method = self.calibration if self.objective == "binary" else "none"
        self.calibrator_ = Calibrator(method)
        if method != "none":
            if X_valid is None or y_valid is None:
                raise ValueError("calibration needs validation rows")
            self.calibrator_.fit(self.raw_predict(X_valid), y_valid)
        else:
            self.calibrator_.fit(np.zeros(1), np.zeros(1))
        return self

    def raw_predict(self, X: pd.DataFrame) -> np.ndarray:
        matrix = X[self.feature_names_].to_numpy(np.float64)
        if self.inputs_ is not None and self.linear_ is not None:
            return linear_output(self.objective, linear.margin(self.inputs_, self.linear_, matrix))
        return self.booster_.inplace_predict(matrix, validate_features=False)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities (classifiers) or values (regression)."""
        return self.calibrator_.transform(self.raw_predict(X))

    def contributions(self, X: pd.DataFrame) -> np.ndarray:
        """XGBoost's own per-feature contributions (SHAP values) on the margin, plus bias;
        exact weight x input for a linear booster, its indicator columns folded in."""
        matrix = X[self.feature_names_].to_numpy(np.float64)
        if self.inputs_ is not None and self.linear_ is not None:
            return linear.contributions(self.inputs_, self.linear_, matrix)
        return self.booster_.predict(
            xgb.DMatrix(matrix), pred_contribs=True, validate_features=False
        )

    def importance(self) -> dict[str, float]:
        """Per feature: total gain of its splits (trees) or |weight| on its standardised
        input plus its missing indicator (linear)."""
        if self.inputs_ is None or self.linear_ is None:
            gain = self.booster_.get_score(importance_type="gain")
            return {k: float(sum(v)) if isinstance(v, list) else float(v) for k, v in gain.items()}
        weights = np.abs(self.linear_[0])
        out = np.zeros(len(self.feature_names_))
        np.add.at(out, linear.source_of(self.inputs_), weights)
        return {name: float(w) for name, w in zip(self.feature_names_, out, strict=True) if w}

    def save(self, folder: Path, extra: dict[str, Any] | None = None) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(folder / BOOSTER_FILE)
        meta = {
            "objective": self.objective,
            "booster": self.booster,
            "features": self.feature_names_,
            **({"inputs": self.inputs_} if self.inputs_ is not None else {}),
            "calibration": {"method": self.calibrator_.method, "params": self.calibrator_.params_},
            **(extra or {}),
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=1))
        return folder


def linear_output(objective: str, margin: np.ndarray) -> np.ndarray:
    """A linear booster's output from its margin: a probability for a classifier."""
    return 1.0 / (1.0 + np.exp(-margin)) if objective == "binary" else margin


def load_meta(folder: Path) -> dict[str, Any]:
    """The metadata written by `BoostedModel.save` (features, calibration, extras)."""
    return dict(json.loads((folder / META_FILE).read_text()))


def load_booster(folder: Path) -> xgb.Booster:
    booster = xgb.Booster()
    booster.load_model(folder / BOOSTER_FILE)
    return booster
