"""The probabilistic CLV model (BG/NBD + Gamma-Gamma) on the clv feature service, and the
naive baseline, so they can be compared with the XGBoost regressor on the same holdout.

The BG/NBD inputs are derived from features every customer row has, so whichever model wins
is served from the same feature vector: T = tenure, frequency = repeat order days, recency =
age at the last order, monetary value = revenue per order day. Units are days.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from training.probabilistic import BGNBD, GammaGamma, expected_revenue

HORIZON_DAYS = 365.0
BGNBD_FEATURES = ["tenure_days", "order_days_lifetime", "days_since_last_order", "lifetime_revenue"]
NAIVE_FEATURE = "revenue_12m"  # "the last 12 months repeat"


def bgnbd_inputs(features: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """(frequency, recency, T, monetary value) per row from the clv features."""
    T = np.maximum(features["tenure_days"].to_numpy(float), 1.0)
    days = np.maximum(features["order_days_lifetime"].to_numpy(float), 1.0)
    frequency = days - 1.0
    recency = np.clip(T - features["days_since_last_order"].to_numpy(float), 0.0, T)
    recency = np.where(frequency > 0, recency, 0.0)
    monetary = np.where(frequency > 0, features["lifetime_revenue"].to_numpy(float) / days, 0.0)
    return frequency, recency, T, monetary


def fit_bgnbd(features: pd.DataFrame, seed: int) -> dict[str, Any]:
    """Fit both models by maximum likelihood; return their parameters as metadata."""
    frequency, recency, T, monetary = bgnbd_inputs(features)
    bg = BGNBD(random_state=seed).fit(frequency, recency, T)
    spenders = frequency > 0
    gg = GammaGamma(random_state=seed).fit(frequency[spenders], monetary[spenders])
    return {
        "kind": "bgnbd",
        "features": list(features.columns),
        "bgnbd": {"r": bg.r_, "alpha": bg.alpha_, "a": bg.a_, "b": bg.b_},
        "gamma_gamma": {"p": gg.p_, "q": gg.q_, "v": gg.v_},
        "horizon_days": HORIZON_DAYS,
        "log_likelihood": {"bgnbd": bg.log_likelihood_, "gamma_gamma": gg.log_likelihood_},
    }


def bgnbd_predict(meta: dict[str, Any], features: pd.DataFrame) -> np.ndarray:
    """Expected revenue over the horizon from fitted parameters (pure)."""
    bg = BGNBD()
    for name, value in meta["bgnbd"].items():
        setattr(bg, f"{name}_", value)
    gg = GammaGamma()
    for name, value in meta["gamma_gamma"].items():
        setattr(gg, f"{name}_", value)
    frequency, recency, T, monetary = bgnbd_inputs(features)
    horizon = meta["horizon_days"]
    with np.errstate(all="ignore"):
        value = np.asarray(expected_revenue(bg, gg, frequency, recency, T, monetary, horizon))
        # Subscription invoices are so regular that the fit runs to its bounds (r, alpha ->
        # infinity: no rate heterogeneity), where the 2F1 term overflows. Its limit is the
        # posterior rate times the horizon times P(alive).
        rate = (bg.r_ + frequency) / (bg.alpha_ + T)
        alive = bg.probability_alive(frequency, recency, T)
        limit = rate * horizon * alive * gg.expected_average_value(frequency, monetary)
    return np.where(np.isfinite(value), value, limit).astype(float)


def naive_predict(features: pd.DataFrame) -> np.ndarray:
    """The naive baseline: next 12 months repeat the last 12."""
    return features[NAIVE_FEATURE].to_numpy(float)
