"""The linear booster: its input transform (pure), and a gblinear model that ships that
transform, scores the same after loading, and explains its margin exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from serving.scoring import score_matrix
from training import linear
from training.model import BoostedModel
from training.pyfunc import load_scorer
from training.specs import LINEAR_SPACE, SPECS, ModelSpec


def _frame(n: int = 4000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(np.exp(rng.normal(1.0, 1.0, n))).astype(float)  # heavy-tailed
    score = rng.normal(50, 10, n)  # symmetric
    tenure = rng.uniform(0, 40, n)
    tenure[rng.random(n) < 0.3] = np.nan  # known for some rows only
    margin = -2.0 + 0.8 * np.log1p(counts) + 0.05 * (score - 50) + np.where(np.isnan(tenure), -1, 0)
    y = (rng.random(n) < 1 / (1 + np.exp(-margin))).astype(float)
    X = pd.DataFrame({"opens": counts, "fit_score": score, "tenure": tenure})
    return X, y, margin


def test_inputs_log_skewed_counts_standardise_and_flag_missing():
    X, _, _ = _frame()
    inputs = linear.fit_inputs(X)
    by_name = {c["name"]: c for c in inputs["columns"]}
    assert by_name["opens"]["log"] and not by_name["fit_score"]["log"]
    assert [n for n, c in by_name.items() if c["indicator"]] == ["tenure"]
    assert linear.input_names(inputs) == ["opens", "fit_score", "tenure", "tenure__missing"]
    assert list(linear.source_of(inputs)) == [0, 1, 2, 2]
    columns = linear.transform(inputs, X.to_numpy(np.float64))
    known = ~np.isnan(X["tenure"].to_numpy())
    assert np.allclose(columns[:, :2].mean(axis=0), 0) and np.allclose(
        columns[:, :2].std(axis=0), 1
    )
    assert np.isclose(columns[known, 2].mean(), 0) and np.isclose(columns[known, 2].std(), 1)
    assert (columns[~known, 2] == 0).all() and (columns[:, 3] == ~known).all()
    # A value missing where training never had one reads as the training mean, no indicator.
    unseen = linear.transform(inputs, np.array([[np.nan, np.nan, 3.0]]))
    assert unseen[0, 0] == 0 and unseen[0, 1] == 0 and unseen[0, 3] == 0
    with pytest.raises(ValueError, match="expected 3 feature columns, got 2"):
        linear.transform(inputs, np.zeros((1, 2)))


def test_a_linear_booster_ships_its_inputs_and_explains_its_margin(tmp_path: Path):
    X, y, margin = _frame()
    train, valid = slice(0, 3000), slice(3000, None)
    model = BoostedModel(booster="gblinear", params={"reg_lambda": 0.01}, num_rounds=100)
    model.fit(X[train], y[train], X[valid], y[valid])
    matrix = X.to_numpy(np.float64)
    # The weights read from the booster give XGBoost's own margin.
    booster_margin = model.booster_.predict(
        xgb.DMatrix(linear.transform(model.inputs_, matrix)),
        output_margin=True,
        validate_features=False,
    )
    assert np.allclose(
        linear.margin(model.inputs_, model.linear_, matrix), booster_margin, atol=1e-5
    )
    assert np.corrcoef(booster_margin, margin)[0, 1] > 0.95  # it learned the true log-odds
    # Contributions: one per feature plus the bias, summing to the margin.
    parts = model.contributions(X)
    assert parts.shape == (len(X), 4)
    assert np.allclose(parts.sum(axis=1), booster_margin, atol=1e-5)
    assert set(model.importance()) == {"opens", "fit_score", "tenure"}

    scorer = load_scorer(model.save(tmp_path / "model", extra={"score_quantiles": [0.0] * 101}))
    assert scorer.linear is not None and scorer.meta["booster"] == "gblinear"
    assert np.allclose(scorer.predict_matrix(matrix), model.predict(X))
    assert ((scorer.predict_matrix(matrix) > 0) & (scorer.predict_matrix(matrix) < 1)).all()
    table = score_matrix(scorer, matrix[:5])
    assert np.allclose(
        table.reason_contribution, np.take_along_axis(parts[:5, :-1], table.reason_index, axis=1)
    )


def test_a_linear_spec_tunes_the_linear_space_and_auto_counts_positives():
    fields = {**SPECS["churn"].model_dump(), "booster": "gblinear"}
    assert ModelSpec(**fields).space == LINEAR_SPACE
    assert SPECS["churn"].space == SPECS["churn"].search_space  # trees
    with pytest.raises(ValueError, match="max_depth, min_child_weight, subsample tune trees"):
        ModelSpec(**{**fields, "linear_space": SPECS["churn"].model_dump()["search_space"]})
    react = SPECS["reactivation"]
    assert react.booster == "auto" and react.linear_below_positives == 100
    with pytest.raises(ValueError, match="resolved by the job"):
        _ = react.space
    assert react.resolved(45).booster == "gblinear" and react.resolved(45).space == LINEAR_SPACE
    assert react.resolved(130).booster == "gbtree"
    assert react.resolved(130).space["max_depth"].high == 4  # reactivation's own tree space
    with pytest.raises(ValueError, match="binary only"):
        ModelSpec(**{**SPECS["clv"].model_dump(), "booster": "auto"})
