"""BG/NBD and Gamma-Gamma: published CDNOW estimates, parameter recovery, RFM summaries."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.probabilistic import BGNBD, GammaGamma, expected_revenue, rfm_summary


def _lifetimes_datasets() -> Path | None:
    """The `datasets/` folder of the installed lifetimes package, found without importing it."""
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "datasets"
    return folder if folder.is_dir() else None


DATASETS = _lifetimes_datasets()
needs_lifetimes = pytest.mark.skipif(
    DATASETS is None,
    reason="the lifetimes package (source of the CDNOW summaries) is not installed; "
    "pip install --no-deps lifetimes==0.11.3",
)


@pytest.fixture(scope="module")
def cdnow_summary() -> pd.DataFrame:
    """CDNOW (frequency, recency, T) for 2357 customers, in weeks (FHL 2005)."""
    assert DATASETS is not None
    return pd.read_csv(DATASETS / "cdnow_customers_summary.csv")


@pytest.fixture(scope="module")
def cdnow_bgnbd(cdnow_summary: pd.DataFrame) -> BGNBD:
    return BGNBD().fit(cdnow_summary["frequency"], cdnow_summary["recency"], cdnow_summary["T"])


@pytest.fixture(scope="module")
def cdnow_rfm() -> pd.DataFrame:
    """The same 2357 CDNOW customers as (x, t_x, T) plus mean repeat spend `zbar`."""
    assert DATASETS is not None
    return pd.read_csv(DATASETS / "cdnow_customers_summary_with_transactions.csv")


@pytest.fixture(scope="module")
def cdnow_spend(cdnow_rfm: pd.DataFrame) -> pd.DataFrame:
    """CDNOW repeat buyers only (946 customers): the Gamma-Gamma estimation sample."""
    return cdnow_rfm.loc[cdnow_rfm["x"] > 0]


@pytest.fixture(scope="module")
def cdnow_gamma_gamma(cdnow_spend: pd.DataFrame) -> GammaGamma:
    return GammaGamma().fit(cdnow_spend["x"], cdnow_spend["zbar"])


@needs_lifetimes
def test_bgnbd_reproduces_published_cdnow_estimates(cdnow_bgnbd: BGNBD) -> None:
    # Fader, Hardie & Lee (2005), "Counting your customers the easy way", section 5.
    fitted = (cdnow_bgnbd.r_, cdnow_bgnbd.alpha_, cdnow_bgnbd.a_, cdnow_bgnbd.b_)
    np.testing.assert_allclose(fitted, (0.243, 4.414, 0.793, 2.426), rtol=0.01)
    assert cdnow_bgnbd.log_likelihood_ == pytest.approx(-9582.4, abs=0.5)


@needs_lifetimes
def test_bgnbd_reproduces_published_conditional_expectation(cdnow_bgnbd: BGNBD) -> None:
    # The paper's worked example: x=2, t_x=30.43, T=38.86 expects 1.226 purchases in 39 weeks.
    expected = cdnow_bgnbd.expected_purchases(39, [2], [30.43], [38.86])
    assert expected[0] == pytest.approx(1.226, abs=0.001)


@needs_lifetimes
def test_gamma_gamma_reproduces_published_cdnow_estimates(
    cdnow_gamma_gamma: GammaGamma,
) -> None:
    # Fader & Hardie (2013), "The Gamma-Gamma model of monetary value": p, q, gamma.
    fitted = (cdnow_gamma_gamma.p_, cdnow_gamma_gamma.q_, cdnow_gamma_gamma.v_)
    np.testing.assert_allclose(fitted, (6.25, 3.74, 15.44), rtol=0.01)
    assert np.isfinite(cdnow_gamma_gamma.log_likelihood_)


@needs_lifetimes
def test_expected_revenue_is_monotone_in_horizon(
    cdnow_bgnbd: BGNBD, cdnow_gamma_gamma: GammaGamma, cdnow_rfm: pd.DataFrame
) -> None:
    rft = (cdnow_rfm["x"], cdnow_rfm["t_x"], cdnow_rfm["T"])
    revenue = np.stack(
        [
            expected_revenue(cdnow_bgnbd, cdnow_gamma_gamma, *rft, cdnow_rfm["zbar"], horizon=h)
            for h in (0.0, 1.0, 4.0, 13.0, 39.0, 104.0)
        ]
    )
    assert np.all(revenue[0] == 0)
    assert np.all(np.diff(revenue, axis=0) > 0)
    # Customers without repeat purchases are valued with the population mean spend.
    one_timers = cdnow_rfm["x"].to_numpy() == 0
    purchases = cdnow_bgnbd.expected_purchases(39.0, *rft)
    population_mean = cdnow_gamma_gamma.p_ * cdnow_gamma_gamma.v_ / (cdnow_gamma_gamma.q_ - 1)
    np.testing.assert_allclose(revenue[4][one_timers], purchases[one_timers] * population_mean)


def _simulate_bgnbd(
    r: float, alpha: float, a: float, b: float, T: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw (frequency, recency) for customers observed for T periods after a first purchase."""
    rng = np.random.default_rng(seed)
    n = len(T)
    rate = rng.gamma(r, 1 / alpha, size=n)
    dropout = rng.beta(a, b, size=n)
    frequency = np.zeros(n)
    recency = np.zeros(n)
    clock = np.zeros(n)
    active = np.ones(n, dtype=bool)
    while active.any():
        clock[active] += rng.exponential(1 / rate[active])
        active &= clock <= T
        frequency[active] += 1
        recency[active] = clock[active]
        # After each repeat purchase the customer drops out with probability p.
        active &= rng.random(n) >= dropout
    return frequency, recency


def test_bgnbd_recovers_simulated_parameters() -> None:
    truth = (0.5, 6.0, 0.8, 2.5)
    T = np.random.default_rng(1).uniform(26, 78, size=8000)
    frequency, recency = _simulate_bgnbd(*truth, T=T, seed=2)
    model = BGNBD().fit(frequency, recency, T)
    fitted = (model.r_, model.alpha_, model.a_, model.b_)
    np.testing.assert_allclose(fitted, truth, rtol=0.25)
    alive = model.probability_alive(frequency, recency, T)
    assert np.all((alive > 0) & (alive <= 1))
    assert np.all(alive[frequency == 0] == 1)


def test_bgnbd_fit_is_deterministic() -> None:
    T = np.full(500, 52.0)
    frequency, recency = _simulate_bgnbd(0.5, 6.0, 0.8, 2.5, T=T, seed=3)
    first = BGNBD(random_state=7).fit(frequency, recency, T)
    second = BGNBD(random_state=7).fit(frequency, recency, T)
    assert (first.r_, first.alpha_, first.a_, first.b_) == (
        second.r_,
        second.alpha_,
        second.a_,
        second.b_,
    )


def test_gamma_gamma_recovers_simulated_parameters() -> None:
    rng = np.random.default_rng(4)
    p, q, v = 6.0, 4.0, 15.0
    n = 6000
    frequency = rng.integers(1, 10, size=n).astype(float)
    nu = rng.gamma(q, 1 / v, size=n)
    # The mean of x Gamma(p, nu) spends is Gamma(p x, nu x).
    monetary = rng.gamma(p * frequency, 1 / (nu * frequency))
    model = GammaGamma().fit(frequency, monetary)
    np.testing.assert_allclose((model.p_, model.q_, model.v_), (p, q, v), rtol=0.15)


@pytest.mark.parametrize(
    ("frequency", "recency", "T", "match"),
    [
        ([1, 2], [1.0], [5.0, 5.0], "mismatched lengths"),
        ([-1, 2], [0.0, 1.0], [5.0, 5.0], "frequency contains a negative value"),
        ([1, 2], [-1.0, 1.0], [5.0, 5.0], "recency contains a negative value"),
        ([1, 2], [6.0, 1.0], [5.0, 5.0], "recency > T at position 0"),
        ([1.5, 2], [1.0, 1.0], [5.0, 5.0], "frequency contains a non-integer"),
        ([0, 2], [1.0, 1.0], [5.0, 5.0], "recency must be 0 when frequency is 0"),
        ([1, 2], [0.0, 0.0], [0.0, 5.0], "T contains a non-positive value"),
        ([], [], [], "frequency is empty"),
        ([0, 0], [0.0, 0.0], [5.0, 5.0], "BG/NBD is not identified"),
        ([1, np.nan], [1.0, 1.0], [5.0, 5.0], "frequency contains a non-finite"),
    ],
)
def test_bgnbd_fit_rejects_bad_input(
    frequency: list[float], recency: list[float], T: list[float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        BGNBD().fit(frequency, recency, T)


def test_bgnbd_predictions_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="not fitted"):
        BGNBD().probability_alive([1], [1.0], [2.0])
    model = BGNBD()
    model.r_, model.alpha_, model.a_, model.b_ = 0.24, 4.4, 0.79, 2.4
    with pytest.raises(ValueError, match="t must be a finite non-negative"):
        model.expected_purchases(-1.0, [1], [1.0], [2.0])
    with pytest.raises(ValueError, match="recency > T"):
        model.probability_alive([1], [3.0], [2.0])


@pytest.mark.parametrize(
    ("frequency", "monetary_value", "match"),
    [
        ([1, 2], [10.0], "mismatched lengths"),
        ([1, 2], [10.0, -5.0], "monetary_value contains a negative value"),
        ([1, 2], [10.0, 0.0], "monetary_value must be positive"),
        ([0, 0], [0.0, 0.0], "needs repeat buyers"),
        ([], [], "frequency is empty"),
    ],
)
def test_gamma_gamma_fit_rejects_bad_input(
    frequency: list[float], monetary_value: list[float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        GammaGamma().fit(frequency, monetary_value)


def test_gamma_gamma_value_rejects_unfitted_and_bad_q() -> None:
    with pytest.raises(ValueError, match="not fitted"):
        GammaGamma().expected_average_value([1], [10.0])
    model = GammaGamma()
    model.p_, model.q_, model.v_ = 6.0, 0.9, 15.0
    with pytest.raises(ValueError, match="q <= 1"):
        model.expected_average_value([0], [0.0])


def test_expected_revenue_rejects_bad_input() -> None:
    bgnbd = BGNBD()
    bgnbd.r_, bgnbd.alpha_, bgnbd.a_, bgnbd.b_ = 0.24, 4.4, 0.79, 2.4
    gg = GammaGamma()
    gg.p_, gg.q_, gg.v_ = 6.25, 3.74, 15.44
    with pytest.raises(ValueError, match="horizon|t must be"):
        expected_revenue(bgnbd, gg, [1], [1.0], [2.0], [10.0], horizon=-4.0)
    with pytest.raises(ValueError, match="mismatched lengths"):
        expected_revenue(bgnbd, gg, [1, 2], [1.0, 1.5], [2.0, 2.0], [10.0], horizon=4.0)


@pytest.fixture
def tiny_orders() -> pd.DataFrame:
    """Three customers; the cutoff is 2024-01-29 and periods are weeks."""
    return pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "a", "b", "c", "c", "a"],
            "ordered_at": pd.to_datetime(
                [
                    "2024-01-01 09:00",
                    "2024-01-01 17:30",  # same day as the first order: one occasion
                    "2024-01-08 12:00",
                    "2024-01-22 08:00",
                    "2024-01-15 10:00",
                    "2024-01-14 10:00",
                    "2024-01-29 00:00",  # at the cutoff: excluded
                    "2024-02-05 10:00",  # after the cutoff: excluded
                ]
            ),
            "amount": [10.0, 5.0, 20.0, 40.0, 7.0, 3.0, 99.0, 1000.0],
        }
    )


def test_rfm_summary_on_hand_computed_example(tiny_orders: pd.DataFrame) -> None:
    summary = rfm_summary(
        tiny_orders, "customer_id", "ordered_at", "amount", pd.Timestamp("2024-01-29")
    )
    expected = pd.DataFrame(
        {
            # a: occasions 01-01 (15), 01-08 (20), 01-22 (40); b: 01-15; c: 01-14.
            "frequency": np.array([2, 0, 0], dtype=np.int64),
            "recency": [3.0, 0.0, 0.0],  # 21 days / 7
            "T": [4.0, 2.0, 15 / 7],  # 28, 14 and 15 days / 7
            "monetary_value": [30.0, 0.0, 0.0],  # mean of 20 and 40; the first order is excluded
        },
        index=pd.Index(["a", "b", "c"], name="customer_id"),
    )
    pd.testing.assert_frame_equal(summary, expected)


def test_rfm_summary_in_days(tiny_orders: pd.DataFrame) -> None:
    summary = rfm_summary(
        tiny_orders, "customer_id", "ordered_at", "amount", pd.Timestamp("2024-01-29"), 1.0
    )
    assert summary.loc["a", "recency"] == 21.0
    assert summary.loc["a", "T"] == 28.0


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"customer_col": "user"}, "no column 'user'"),
        ({"period_days": 0.0}, "period_days must be a positive number"),
        ({"cutoff": pd.Timestamp("2023-01-01")}, "no rows with 'ordered_at' before cutoff"),
        ({"cutoff": pd.NaT}, "cutoff is missing"),
    ],
)
def test_rfm_summary_rejects_bad_arguments(
    tiny_orders: pd.DataFrame, change: dict[str, object], match: str
) -> None:
    kwargs: dict[str, object] = {
        "customer_col": "customer_id",
        "date_col": "ordered_at",
        "amount_col": "amount",
        "cutoff": pd.Timestamp("2024-01-29"),
        **change,
    }
    with pytest.raises(ValueError, match=match):
        rfm_summary(tiny_orders, **kwargs)  # type: ignore[arg-type]


def test_rfm_summary_rejects_bad_values(tiny_orders: pd.DataFrame) -> None:
    cutoff = pd.Timestamp("2024-01-29")
    negative = tiny_orders.assign(amount=tiny_orders["amount"].where(lambda s: s != 20.0, -20.0))
    with pytest.raises(ValueError, match="negative amount"):
        rfm_summary(negative, "customer_id", "ordered_at", "amount", cutoff)
    as_text = tiny_orders.assign(ordered_at=tiny_orders["ordered_at"].astype(str))
    with pytest.raises(ValueError, match="must be datetime64"):
        rfm_summary(as_text, "customer_id", "ordered_at", "amount", cutoff)
    missing = tiny_orders.assign(amount=tiny_orders["amount"].where(lambda s: s != 20.0))
    with pytest.raises(ValueError, match=r"orders\['amount'\] contains missing values"):
        rfm_summary(missing, "customer_id", "ordered_at", "amount", cutoff)
