"""Probabilistic CLV models: BG/NBD purchase counts and Gamma-Gamma spend, fitted by ML.

Self-contained (numpy + scipy) re-implementations of Fader, Hardie & Lee (2005),
"Counting your customers the easy way" and "RFM and CLV", plus the RFM summary they consume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import OptimizeResult, minimize
from scipy.special import betaln, expit, gammaln, hyp2f1

FloatArray = NDArray[np.float64]

# Log-parameter box: wide enough for any real data set, narrow enough that exp() never
# overflows and the optimiser cannot wander off to a degenerate corner.
_LOG_BOUNDS = (np.log(1e-6), np.log(1e6))


def _as_vector(name: str, values: ArrayLike) -> FloatArray:
    """Return `values` as a finite, non-negative 1-D float array, or raise naming `name`."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(array)):
        bad = array[~np.isfinite(array)][0]
        raise ValueError(f"{name} contains a non-finite value ({bad})")
    if np.any(array < 0):
        raise ValueError(f"{name} contains a negative value ({array[array < 0][0]})")
    return array


def _same_length(**arrays: FloatArray) -> None:
    """Raise if the named arrays do not all have the same length."""
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"mismatched lengths: {lengths}")


def _check_frequency(frequency: FloatArray) -> None:
    """Frequencies are counts of repeat purchases, so they must be whole numbers."""
    fractional = frequency != np.floor(frequency)
    if np.any(fractional):
        raise ValueError(f"frequency contains a non-integer value ({frequency[fractional][0]})")


def _check_rft(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validate a (frequency, recency, T) summary and return it as float arrays."""
    x = _as_vector("frequency", frequency)
    t_x = _as_vector("recency", recency)
    age = _as_vector("T", T)
    _same_length(frequency=x, recency=t_x, T=age)
    _check_frequency(x)
    if np.any(age <= 0):
        raise ValueError(f"T contains a non-positive value ({age[age <= 0][0]})")
    too_recent = t_x > age
    if np.any(too_recent):
        i = int(np.argmax(too_recent))
        raise ValueError(f"recency > T at position {i} (recency={t_x[i]}, T={age[i]})")
    stray = (x == 0) & (t_x != 0)
    if np.any(stray):
        i = int(np.argmax(stray))
        raise ValueError(f"recency must be 0 when frequency is 0 (position {i}, recency={t_x[i]})")
    return x, t_x, age


def _check_horizon(name: str, value: float) -> float:
    """Validate a forecast horizon (non-negative, finite) and return it as a float."""
    horizon = float(value)
    if not np.isfinite(horizon) or horizon < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {value}")
    return horizon


def _minimise(
    objective: Callable[[FloatArray], float],
    starts: Sequence[FloatArray],
    model: str,
) -> OptimizeResult:
    """Minimise `objective` over log-parameters from several starts; raise if none converges.

    L-BFGS-B with finite-difference gradients occasionally stops on a line-search failure
    right at the optimum, so the best start is polished with Nelder-Mead before giving up.
    """
    bounds = [_LOG_BOUNDS] * len(starts[0])
    results = [
        minimize(objective, start, method="L-BFGS-B", bounds=bounds, options={"maxiter": 2000})
        for start in starts
    ]
    finite = [result for result in results if np.isfinite(result.fun)]
    if not finite:
        raise ValueError(f"{model} fit did not converge: the log-likelihood is not finite")
    best = min(finite, key=lambda result: result.fun)
    if best.success:
        return best
    polished = minimize(
        objective,
        best.x,
        method="Nelder-Mead",
        bounds=bounds,
        options={"maxiter": 5000, "xatol": 1e-8, "fatol": 1e-12},
    )
    if polished.success and np.isfinite(polished.fun):
        return polished
    # A likelihood that keeps rising towards a parameter bound has its optimum there: the data
    # are the model's limiting case (e.g. Gamma-Gamma on near-constant spend per order, p ->
    # infinity). The line search then fails at the bound; the bound point is the answer.
    edge = min((r for r in (best, polished) if np.isfinite(r.fun)), key=lambda r: r.fun)
    if _at_bound(edge.x):
        return edge
    raise ValueError(f"{model} fit did not converge: {best.message}; {polished.message}")


def _at_bound(x: FloatArray, tolerance: float = 1e-3) -> bool:
    """Whether any log-parameter sits on the search bounds."""
    low, high = _LOG_BOUNDS
    return bool(np.any((x <= low + tolerance) | (x >= high - tolerance)))


def _starts(n_starts: int, n_params: int, random_state: int) -> list[FloatArray]:
    """Deterministic log-space starting points: the origin (all parameters 1) plus jitter."""
    if n_starts < 1:
        raise ValueError(f"n_starts must be at least 1, got {n_starts}")
    rng = np.random.default_rng(random_state)
    jitter = rng.normal(0.0, 1.0, size=(n_starts - 1, n_params))
    return [np.zeros(n_params), *jitter]


def bgnbd_log_likelihood(
    params: Sequence[float] | FloatArray, frequency: FloatArray, recency: FloatArray, T: FloatArray
) -> FloatArray:
    """Per-customer BG/NBD log-likelihood at params (r, alpha, a, b); inputs pre-validated."""
    r, alpha, a, b = params
    x, t_x = frequency, recency
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) - betaln(a, b)
    survived = betaln(a, b + x) - (r + x) * np.log(alpha + T)
    # Dropped out right after the last purchase; only possible once there was a repeat
    # purchase. np.maximum keeps betaln's argument positive where the term is masked out.
    dropped = betaln(a + 1, b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + t_x)
    return common + np.where(x > 0, np.logaddexp(survived, dropped), survived)


class BGNBD:
    """BG/NBD model of repeat purchases (Fader, Hardie & Lee 2005), fitted by maximum likelihood.

    Inputs are per-customer summaries in the lifetimes convention: `frequency` repeat purchases,
    `recency` the age at the last purchase and `T` the age at the end of observation, all
    measured from the first purchase in the same time unit.
    """

    def __init__(self, n_starts: int = 4, random_state: int = 0) -> None:
        self.n_starts = n_starts
        self.random_state = random_state

    def fit(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> BGNBD:
        """Estimate r, alpha, a, b by maximising the total log-likelihood."""
        x, t_x, age = _check_rft(frequency, recency, T)
        if not np.any(x > 0):
            raise ValueError("frequency is 0 for every customer; BG/NBD is not identified")

        def objective(log_params: FloatArray) -> float:
            # Mean rather than sum keeps the objective's scale independent of the sample size.
            return -float(np.mean(bgnbd_log_likelihood(np.exp(log_params), x, t_x, age)))

        starts = _starts(self.n_starts, 4, self.random_state)
        result = _minimise(objective, starts, "BGNBD")
        self.r_, self.alpha_, self.a_, self.b_ = (float(v) for v in np.exp(result.x))
        self.log_likelihood_ = float(np.sum(bgnbd_log_likelihood(self._params(), x, t_x, age)))
        return self

    def _params(self) -> tuple[float, float, float, float]:
        """Fitted (r, alpha, a, b); raises if `fit` has not been called."""
        if not hasattr(self, "r_"):
            raise ValueError("BGNBD is not fitted; call fit first")
        return self.r_, self.alpha_, self.a_, self.b_

    def probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """P(customer still active at T | x, t_x, T)."""
        r, alpha, a, b = self._params()
        x, t_x, age = _check_rft(frequency, recency, T)
        # 1 / (1 + a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x)), evaluated in logs via expit.
        log_odds_dead = (
            np.log(a)
            - np.log(b + np.maximum(x, 1) - 1)
            + (r + x) * (np.log(alpha + age) - np.log(alpha + t_x))
        )
        return np.where(x > 0, expit(-log_odds_dead), 1.0)

    def expected_purchases(
        self, t: float, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """E[number of purchases in (T, T + t] | x, t_x, T] (paper equation 10)."""
        r, alpha, a, b = self._params()
        horizon = _check_horizon("t", t)
        x, t_x, age = _check_rft(frequency, recency, T)
        z = horizon / (alpha + age + horizon)
        # Euler's transformation of the paper's (1-z)^(r+x) 2F1(r+x, b+x; a+b+x-1; z): the
        # same value, but with x only in the third argument, so it neither overflows nor loses
        # precision for heavy buyers.
        tail = (1 - z) ** (a - 1) * hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
        scale = (a + b + x - 1) / (a - 1)
        return scale * (1 - tail) * self.probability_alive(x, t_x, age)


def gamma_gamma_log_likelihood(
    params: Sequence[float] | FloatArray, frequency: FloatArray, monetary_value: FloatArray
) -> FloatArray:
    """Per-customer Gamma-Gamma log-likelihood of mean spend at params (p, q, v)."""
    p, q, v = params
    x, m = frequency, monetary_value
    return (
        gammaln(p * x + q)
        - gammaln(p * x)
        - gammaln(q)
        + q * np.log(v)
        + (p * x - 1) * np.log(m)
        + p * x * np.log(x)
        - (p * x + q) * np.log(v + m * x)
    )


class GammaGamma:
    """Gamma-Gamma model of average transaction value (Fader, Hardie & Lee 2005, "RFM and CLV").

    `monetary_value` is a customer's mean repeat-purchase amount over `frequency` purchases.
    """

    def __init__(self, n_starts: int = 4, random_state: int = 0) -> None:
        self.n_starts = n_starts
        self.random_state = random_state

    def fit(self, frequency: ArrayLike, monetary_value: ArrayLike) -> GammaGamma:
        """Estimate p, q, v on the customers with frequency > 0 (others carry no spend data)."""
        x, m = self._check(frequency, monetary_value)
        repeat = x > 0
        if not np.any(repeat):
            raise ValueError("frequency is 0 for every customer; Gamma-Gamma needs repeat buyers")
        x, m = x[repeat], m[repeat]
        if np.any(m <= 0):
            raise ValueError(
                f"monetary_value must be positive when frequency > 0, got {m[m <= 0][0]}"
            )

        def objective(log_params: FloatArray) -> float:
            return -float(np.mean(gamma_gamma_log_likelihood(np.exp(log_params), x, m)))

        starts = _starts(self.n_starts, 3, self.random_state)
        result = _minimise(objective, starts, "GammaGamma")
        self.p_, self.q_, self.v_ = (float(value) for value in np.exp(result.x))
        self.log_likelihood_ = float(np.sum(gamma_gamma_log_likelihood(self._params(), x, m)))
        return self

    @staticmethod
    def _check(frequency: ArrayLike, monetary_value: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Validate (frequency, monetary_value) and return them as float arrays."""
        x = _as_vector("frequency", frequency)
        m = _as_vector("monetary_value", monetary_value)
        _same_length(frequency=x, monetary_value=m)
        _check_frequency(x)
        return x, m

    def _params(self) -> tuple[float, float, float]:
        """Fitted (p, q, v); raises if `fit` has not been called."""
        if not hasattr(self, "p_"):
            raise ValueError("GammaGamma is not fitted; call fit first")
        return self.p_, self.q_, self.v_

    def population_mean_value(self) -> float:
        """Mean spend per transaction across the population, p v / (q - 1)."""
        p, q, v = self._params()
        if q <= 1:
            raise ValueError(f"population mean spend is infinite for q <= 1 (q={q})")
        return p * v / (q - 1)

    def expected_average_value(self, frequency: ArrayLike, monetary_value: ArrayLike) -> FloatArray:
        """E[mean spend per transaction | x, m_x]; the population mean where frequency is 0."""
        p, q, v = self._params()
        x, m = self._check(frequency, monetary_value)
        # Shrinks the observed mean towards the population mean, more so for few purchases.
        repeat = x > 0
        conditional = p * (v + x * m) / np.where(repeat, p * x + q - 1, 1.0)
        if np.all(repeat):
            return conditional
        return np.where(repeat, conditional, self.population_mean_value())


def expected_revenue(
    bgnbd: BGNBD,
    gg: GammaGamma,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary_value: ArrayLike,
    horizon: float,
) -> FloatArray:
    """Expected revenue per customer over the next `horizon` periods (undiscounted).

    Expected purchases (BG/NBD) times expected spend per purchase (Gamma-Gamma); customers
    without repeat purchases get the population mean spend.
    """
    purchases = bgnbd.expected_purchases(horizon, frequency, recency, T)
    return purchases * gg.expected_average_value(frequency, monetary_value)


def rfm_summary(
    orders: pd.DataFrame,
    customer_col: str,
    date_col: str,
    amount_col: str,
    cutoff: pd.Timestamp,
    period_days: float = 7.0,
) -> pd.DataFrame:
    """Per-customer (frequency, recency, T, monetary_value) from orders strictly before `cutoff`.

    Follows lifetimes (`freq="D"`, `freq_multiplier=period_days`): orders on the same calendar
    day are one purchase occasion with their amounts summed; frequency counts occasions after
    the first; recency and T are the ages at the last occasion and at the cutoff, in units of
    `period_days`; monetary_value is the mean amount of the repeat occasions (0 without any).
    Indexed by customer, sorted.
    """
    for column in (customer_col, date_col, amount_col):
        if column not in orders.columns:
            raise ValueError(f"orders has no column {column!r}; columns are {list(orders.columns)}")
    if not np.isfinite(period_days) or period_days <= 0:
        raise ValueError(f"period_days must be a positive number, got {period_days}")
    if not pd.api.types.is_datetime64_any_dtype(orders[date_col]):
        raise ValueError(f"orders[{date_col!r}] must be datetime64, got {orders[date_col].dtype}")
    if pd.isna(cutoff):
        raise ValueError("cutoff is missing (NaT)")
    for column in (customer_col, date_col, amount_col):
        if orders[column].isna().any():
            raise ValueError(f"orders[{column!r}] contains missing values")
    if not pd.api.types.is_numeric_dtype(orders[amount_col]):
        raise ValueError(f"orders[{amount_col!r}] must be numeric, got {orders[amount_col].dtype}")
    if (orders[amount_col] < 0).any():
        bad = orders.loc[orders[amount_col] < 0, amount_col].iloc[0]
        raise ValueError(f"orders[{amount_col!r}] contains a negative amount ({bad})")

    before = orders.loc[orders[date_col] < cutoff]
    if before.empty:
        raise ValueError(f"orders has no rows with {date_col!r} before cutoff {cutoff}")

    occasions = (
        before.assign(_day=before[date_col].dt.normalize())
        .groupby([customer_col, "_day"], sort=True)[amount_col]
        .sum()
        .reset_index()
    )
    by_customer = occasions.groupby(customer_col, sort=True)
    first_day = by_customer["_day"].transform("min")
    is_repeat = occasions["_day"] > first_day
    period = pd.Timedelta(days=period_days)

    summary = pd.DataFrame(
        {
            "frequency": by_customer.size() - 1,
            "recency": (by_customer["_day"].max() - by_customer["_day"].min()) / period,
            "T": (cutoff - by_customer["_day"].min()) / period,
        }
    )
    repeat_spend = occasions.loc[is_repeat].groupby(customer_col)[amount_col].mean()
    summary["monetary_value"] = repeat_spend.reindex(summary.index, fill_value=0.0).astype(float)
    summary["frequency"] = summary["frequency"].astype(np.int64)
    summary.index.name = customer_col
    return summary
