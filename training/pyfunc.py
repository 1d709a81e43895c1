"""The MLflow pyfunc wrapper of every registered model.

`mlflow.pyfunc.load_model("models:/churn@champion").predict(df)` returns calibrated
probabilities (expected 12-month revenue for `clv`), never class labels. The model folder is
plain files (booster JSON, calibrator and metadata JSON), loaded by `load_scorer`, which the
serving layer uses directly too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from training.linear import coefficients, margin
from training.linear import contributions as linear_contributions
from training.model import apply_calibration, linear_output, load_booster, load_meta


@dataclass
class Scorer:
    """A loaded model: features in order, a raw predictor, the calibration, metadata. A
    linear booster is scored from its weights (`linear`), on the inputs of its transform."""

    meta: dict[str, Any]
    booster: Any | None
    linear: tuple[np.ndarray, float] | None = None

    @property
    def features(self) -> list[str]:
        return list(self.meta["features"])

    def predict_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Scores of a float64 matrix whose columns are `features` in order."""
        if self.meta.get("kind", "xgboost") == "bgnbd":
            from training.clv import bgnbd_predict

            return bgnbd_predict(self.meta, pd.DataFrame(matrix, columns=self.features))
        assert self.booster is not None
        if self.linear is not None:
            raw = linear_output(
                self.meta["objective"], margin(self.meta["inputs"], self.linear, matrix)
            )
        else:
            raw = self.booster.inplace_predict(matrix, validate_features=False)
        calibration = self.meta["calibration"]
        return apply_calibration(calibration["method"], calibration["params"], raw)

    def contributions(self, matrix: np.ndarray) -> np.ndarray | None:
        """Per-feature contributions to the margin, bias last (None for a model without
        them): exact for a linear booster, Saabas-style for trees (XGBoost's approx_contribs:
        linear in tree depth, where exact TreeSHAP is quadratic and took seconds per thousand
        rows on deep boosters)."""
        if self.booster is None:
            return None
        if self.linear is not None:
            return linear_contributions(self.meta["inputs"], self.linear, matrix)
        import xgboost as xgb

        return self.booster.predict(
            xgb.DMatrix(matrix), pred_contribs=True, approx_contribs=True, validate_features=False
        )

    def predict_frame(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise KeyError(f"input lacks feature column(s): {', '.join(missing)}")
        return self.predict_matrix(frame[self.features].to_numpy(np.float64))


def load_scorer(folder: Path) -> Scorer:
    """A scorer from a model folder written by the training job."""
    meta = load_meta(folder)
    booster = load_booster(folder) if meta.get("kind", "xgboost") == "xgboost" else None
    weights = coefficients(booster) if booster is not None and "inputs" in meta else None
    return Scorer(meta, booster, weights)


class ScoringModel(PythonModel):
    """pyfunc flavour: DataFrame of the feature service's columns in, scores out."""

    def load_context(self, context: Any) -> None:
        self.scorer = load_scorer(Path(context.artifacts["model"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        return self.scorer.predict_frame(pd.DataFrame(model_input))
