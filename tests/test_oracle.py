"""The oracle's ground truth conditions only on what the world determined before a cutoff, and
what the world records after a cutoff does not give away a touch's outcome."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate

from simulator import model as m
from simulator.io import as_of
from simulator.model import Calibration
from simulator.oracle import expected_reactivation_probability
from simulator.world import _Simulation

CAL = Calibration()
# Aged leads with low, typical and high interest before the step, of each size and fit.
FIT = np.array([-1.0, 0.0, 0.4, 1.2, 2.0])
INTEREST = np.array([-0.3, 0.0, 0.5, 1.5, 4.0])
AGE = np.array([13.0, 15.0, 20.0, 30.0, 40.0])
SIZE = np.array([0, 1, 2, 0, 2])


def _bayes_by_quadrature(i: int) -> float:
    """The definition, integrated numerically: E[p(I') w(I')] / E[w(I')] over the step I -> I'
    of lead i, with w the outreach's targeting odds."""

    def p(x: float) -> float:
        args = (FIT[i : i + 1], np.array([x]), AGE[i : i + 1], SIZE[i : i + 1])
        return float(m.sigmoid(m.reactivation_logit(CAL, *args))[0])

    def w(x: float) -> float:
        return float(m.targeting_weight(np.array([x]))[0])

    def density(e: float) -> float:
        return float(np.exp(-e / m.SPIKE_MEAN) / m.SPIKE_MEAN)

    base = m.INTEREST_DECAY * INTEREST[i]
    top = 300.0  # the tilted spike density is below exp(-150) beyond it
    num, _ = integrate.quad(lambda e: w(base + e) * p(base + e) * density(e), 0, top, limit=200)
    den, _ = integrate.quad(lambda e: w(base + e) * density(e), 0, top, limit=200)
    r = m.SPIKE_RATE
    return ((1 - r) * w(base) * p(base) + r * num) / ((1 - r) * w(base) + r * den)


def test_reactivation_truth_is_bayes_over_the_interest_step_given_the_touch():
    got = expected_reactivation_probability(CAL, FIT, INTEREST, AGE, SIZE)
    for i in range(len(FIT)):
        assert got[i] == pytest.approx(_bayes_by_quadrature(i), rel=1e-9), i


def test_reactivation_truth_matches_the_simulated_step_and_targeting():
    """The world's own step and targeting rule, sampled: the mean conversion probability of the
    leads outreach picks equals the truth computed from the interest before the step."""
    rng = np.random.default_rng(2024)
    n = 400_000
    got = expected_reactivation_probability(CAL, FIT, INTEREST, AGE, SIZE)
    for i in range(len(FIT)):
        spike = (rng.random(n) < m.SPIKE_RATE) * rng.exponential(m.SPIKE_MEAN, n)
        after = m.interest_step(np.full(n, INTEREST[i]), spike)
        weight = m.targeting_weight(after)
        picked = rng.random(n) < 0.3 * weight / weight.max()
        logit = m.reactivation_logit(
            CAL, np.full(n, FIT[i]), after, np.full(n, AGE[i]), np.full(n, SIZE[i])
        )
        p = m.sigmoid(logit)[picked]
        stderr = p.std() / np.sqrt(len(p))
        assert abs(p.mean() - got[i]) < 4 * stderr, (i, p.mean(), got[i])


class _OtherStepInto(_Simulation):
    """The same world, except that the latent step into month `boundary` (the draw at that
    cutoff) comes from another random stream."""

    def __init__(self, boundary: int, months: int, scale: float, seed: int) -> None:
        super().__init__(months, scale, seed, CAL)
        self.boundary, self.steps = boundary, 0

    def evolve(self, rng: np.random.Generator) -> None:
        self.steps += 1  # this call steps the latent state into month `self.steps`
        other = np.random.default_rng([self.seed, self.steps, 99])
        super().evolve(other if self.steps == self.boundary else rng)


@pytest.mark.parametrize("kind", ["customer", "dormant"])
def test_truth_at_a_cutoff_does_not_see_the_step_drawn_at_that_cutoff(kind: str):
    cutoff, months = 20, 22
    base = _OtherStepInto(boundary=-1, months=months, scale=0.05, seed=11)
    other = _OtherStepInto(boundary=cutoff, months=months, scale=0.05, seed=11)
    base.run()
    other.run()
    at = {sim: sim.truth[kind][cutoff - 1] for sim in (base, other)}  # cutoffs start at 1
    assert (at[base]["cutoff"] == cutoff).all()
    pd.testing.assert_frame_equal(at[base], at[other])
    # The step did change the world: the next cutoff's truth, which it precedes, moves.
    after = [sim.truth[kind][cutoff] for sim in (base, other)]
    assert not after[0].equals(after[1])


def _month_start(dates: pd.Series) -> pd.Series:
    return dates.dt.to_period("M").dt.to_timestamp()


def test_mailings_do_not_reveal_a_coming_conversion(small_world):
    """Every lead touched by reactivation gets the monthly newsletter of the touch month and
    every later one until it becomes a customer, whether the touch converts or not."""
    raw = small_world.raw
    touches, responses = raw["marketing_touches"], raw["marketing_responses"]
    leads = raw["leads"].set_index("lead_id")
    news = touches[(touches["campaign"] == "newsletter") & (touches["entity_kind"] == "lead")]
    mailed = set(zip(news["entity_id"], news["touch_date"], strict=True))
    react = touches[touches["campaign"] == "reactivation"]
    converts = set(responses.loc[responses["response"] == "convert", "touch_id"])
    end = as_of(small_world.months)
    seen = {True: 0, False: 0}
    for touch in react.itertuples():
        converted = leads.at[touch.entity_id, "converted_at"]
        last = converted if pd.notna(converted) else end - pd.Timedelta(days=1)
        start = _month_start(pd.Series([touch.touch_date]))[0]
        due = pd.date_range(start, last, freq="MS") + pd.Timedelta(days=3)
        due = due[(due <= last) & (due < start + pd.DateOffset(months=3))]
        missing = [d for d in due if (touch.entity_id, d) not in mailed]
        assert not missing, (touch.entity_id, touch.touch_date, missing)
        seen[touch.touch_id in converts] += 1
    assert seen[True] > 0 and seen[False] > 0, seen
    # No lead newsletter after the day it became a customer.
    joined = news.join(leads["converted_at"], on="entity_id")
    assert not (joined["touch_date"] > joined["converted_at"]).any()


def test_every_answered_touch_converts_on_its_date(small_world):
    """A touch's conversion becomes a signup (lead) or a return (former customer) on the
    response date, also when that falls in the touch's own month."""
    raw = small_world.raw
    answered = raw["marketing_responses"].merge(raw["marketing_touches"], on="touch_id")
    answered = answered[answered["response"] == "convert"]
    leads = raw["leads"].set_index("lead_id")
    by_lead = answered[answered["entity_kind"] == "lead"]
    signed = leads.loc[by_lead["entity_id"], "converted_at"].to_numpy()
    assert (signed == by_lead["response_date"].to_numpy()).all()
    events = raw["lifecycle_events"]
    returns = events[events["event"] == "return"]
    by_former = answered[answered["entity_kind"] == "customer"]
    found = by_former.merge(
        returns,
        left_on=["entity_id", "response_date"],
        right_on=["customer_id", "event_date"],
        how="left",
    )
    assert len(by_former) > 0 and found["event"].notna().all()
    same_month = _month_start(answered["response_date"]) == _month_start(answered["touch_date"])
    assert same_month.any() and (answered["response_date"] < as_of(small_world.months)).all()
