"""The TechFlow world's behavioural model: catalogue, segment effects and the hazard functions.

Every probability the simulator draws from is computed here, by pure functions of the latent
state, so the month-by-month simulation and the ground-truth oracle use one definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

TIERS = ("basic", "pro", "business")
TIER_PRICE = np.array([39.0, 99.0, 249.0])
# Add-ons are recommended in a fixed ladder, so the next one a customer buys is known.
ADD_ONS = (
    ("A01", "analytics", 19.0),
    ("A02", "integrations", 15.0),
    ("A03", "extra_seats", 29.0),
    ("A04", "priority_support", 39.0),
)
ADD_ON_PRICE = np.array([price for _, _, price in ADD_ONS])
ADD_ON_CUMULATIVE = np.concatenate([[0.0], np.cumsum(ADD_ON_PRICE)])
SERVICES = (("S01", "onboarding", 450.0), ("S02", "training", 300.0), ("S03", "consulting", 1200.0))
SERVICE_WEIGHTS = np.array([0.45, 0.40, 0.15])
SERVICE_MEAN_PRICE = float(SERVICE_WEIGHTS @ np.array([price for _, _, price in SERVICES]))

INDUSTRIES = ("software", "retail", "finance", "healthcare", "manufacturing")
INDUSTRY_WEIGHTS = np.array([0.30, 0.20, 0.18, 0.16, 0.16])
INDUSTRY_HEALTH = np.array([0.15, -0.15, 0.05, 0.0, -0.10])
SIZES = ("small", "mid", "large")
SIZE_WEIGHTS = np.array([0.55, 0.33, 0.12])
SIZE_SEATS = np.array([4.0, 15.0, 60.0])
SIZE_BUDGET = np.array([-0.4, 0.2, 0.9])
SOURCES = ("organic", "paid_search", "webinar", "partner", "referral")
SOURCE_WEIGHTS = np.array([0.32, 0.30, 0.20, 0.18, 0.0])  # referral leads come from referrals
SOURCE_FIT = np.array([0.2, -0.3, 0.1, 0.3, 0.6])
CAMPAIGNS = ("newsletter", "nurture", "reactivation", "winback")
SEVERITIES = ("low", "medium", "high", "critical")

# Latent dynamics: monthly AR(1) pull towards each customer's own mean. Budget and advocacy
# are slow-moving company traits; health and engagement move month to month.
PULL = 0.18
INNOVATION = {"health": 0.30, "engagement": 0.30, "budget": 0.10, "advocacy": 0.15}
# A lead's interest decays month to month and now and then spikes (a new project, a new
# budget): interest' = INTEREST_DECAY * interest + spike, where a spike happens with
# probability SPIKE_RATE and its size is exponential with mean SPIKE_MEAN.
INTEREST_DECAY = 0.8
SPIKE_RATE = 0.04
SPIKE_MEAN = 1.2
# Reactivation outreach picks aged leads with odds growing as exp(TARGETING_TILT * interest).
TARGETING_TILT = 0.3
REACTIVATION_INTEREST = 1.6  # log-odds of converting after a touch per unit of interest


@dataclass(frozen=True)
class Calibration:
    """Intercepts tuned so the default world meets the domain chapter's figures."""

    churn: float = -3.245
    cross_sell: float = -6.3
    upsell: float = -7.0
    downgrade: float = -6.0
    referral: float = -5.307
    services: float = -4.2
    lead_conversion: float = -3.92
    reactivation: float = -5.284
    winback: float = -3.324
    reactivation_touch: float = 0.0133
    winback_touch: float = 0.03
    leads_per_month: float = 700.5
    growth: float = 0.05


def sigmoid(x: FloatArray) -> FloatArray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def calendar_month(month_index: IntArray | int, start_month: int) -> IntArray:
    """Calendar month 1..12 of a simulation month index."""
    return (np.asarray(month_index) + start_month - 1) % 12 + 1


def churn_hazard(
    cal: Calibration,
    health: FloatArray,
    engagement: FloatArray,
    budget: FloatArray,
    tenure_months: FloatArray,
    annual_contract: BoolArray,
    is_renewal_month: BoolArray,
    month_of_year: IntArray,
) -> FloatArray:
    """Probability that an active customer lapses during the month.

    Annual contracts can only end at renewal, where the whole year's risk is concentrated.
    """
    logit = (
        cal.churn
        - 0.95 * health
        - 0.75 * engagement
        - 0.25 * budget
        + 0.55 * np.exp(-tenure_months / 6.0)
        + np.where(month_of_year == 1, 0.25, 0.0)
        - np.where((month_of_year == 7) | (month_of_year == 8), 0.15, 0.0)
    )
    monthly = sigmoid(logit)
    at_renewal = 1.0 - (1.0 - monthly) ** 9  # annual contracts are stickier than 12 months
    return np.where(annual_contract, np.where(is_renewal_month, at_renewal, 0.0), monthly)


def cross_sell_hazard(
    cal: Calibration,
    engagement: FloatArray,
    budget: FloatArray,
    health: FloatArray,
    add_ons_held: IntArray,
    month_of_year: IntArray,
) -> FloatArray:
    """Probability of buying the next add-on of the ladder this month (0 when all are held)."""
    logit = (
        cal.cross_sell
        + 0.85 * engagement
        + 0.75 * budget
        + 0.45 * health
        + np.where(month_of_year >= 10, 0.35, 0.0)
    )
    return np.where(add_ons_held < len(ADD_ONS), sigmoid(logit), 0.0)


def upsell_hazard(
    cal: Calibration, budget: FloatArray, engagement: FloatArray, health: FloatArray, tier: IntArray
) -> FloatArray:
    """Probability of moving to the next plan tier this month (0 on the top tier)."""
    logit = cal.upsell + 1.0 * budget + 0.8 * engagement + 0.35 * health
    return np.where(tier < len(TIERS) - 1, sigmoid(logit), 0.0)


def downgrade_hazard(
    cal: Calibration, budget: FloatArray, health: FloatArray, tier: IntArray
) -> FloatArray:
    """Probability of moving one plan tier down this month (0 on the lowest tier)."""
    logit = cal.downgrade - 0.9 * budget - 0.4 * health
    return np.where(tier > 0, sigmoid(logit), 0.0)


def referral_hazard(cal: Calibration, advocacy: FloatArray, health: FloatArray) -> FloatArray:
    """Probability that a customer refers a new lead this month."""
    return sigmoid(cal.referral + 1.25 * advocacy + 0.35 * health)


def services_hazard(cal: Calibration, budget: FloatArray, engagement: FloatArray) -> FloatArray:
    """Probability of buying a one-off professional service this month."""
    return sigmoid(cal.services + 0.7 * budget + 0.3 * engagement)


def lead_conversion_hazard(
    cal: Calibration, fit: FloatArray, interest: FloatArray, age_months: FloatArray
) -> FloatArray:
    """Monthly probability that a fresh (under 12 months) lead becomes a customer."""
    return sigmoid(cal.lead_conversion + 1.0 * fit + 1.2 * interest - 0.22 * age_months)


def interest_step(interest: FloatArray, spike: FloatArray) -> FloatArray:
    """A lead's interest one month on, given the month's spike (0 when there is none)."""
    return INTEREST_DECAY * interest + spike


def lead_score(fit: FloatArray, noise: FloatArray) -> IntArray:
    """The 0-100 fit score the marketing system gives a lead at capture (firmographics and the
    contact's role): a noisy reading of the lead's fit."""
    return np.round(100.0 * sigmoid(fit + noise - 0.5)).astype(np.int64)


def web_visit_rate(fit: FloatArray, interest: FloatArray) -> FloatArray:
    """Expected website visits of a lead in a month (known visitors, tracked by the marketing
    system): interest brings leads back to the site, a good fit somewhat more often, up to
    four visits a month."""
    return 4.0 * sigmoid(-3.0 + 0.4 * fit + 1.5 * interest)


def targeting_weight(interest: FloatArray) -> FloatArray:
    """Relative odds that reactivation outreach picks an aged lead of this interest."""
    return np.exp(TARGETING_TILT * interest)


def reactivation_logit(
    cal: Calibration,
    fit: FloatArray,
    interest: FloatArray,
    age_months: FloatArray,
    size: IntArray,
) -> FloatArray:
    """Log-odds that an aged lead converts within 60 days of a reactivation touch."""
    return (
        cal.reactivation
        + 0.9 * fit
        + REACTIVATION_INTEREST * interest
        + np.array([0.0, 0.15, 0.3])[size]
        - 0.025 * (age_months - 12.0)
    )


def winback_probability(
    cal: Calibration,
    health: FloatArray,
    budget: FloatArray,
    prior_tenure_months: FloatArray,
    months_since_lapse: FloatArray,
    tier: IntArray,
) -> FloatArray:
    """Probability that a former customer returns within 60 days of a win-back touch."""
    logit = (
        cal.winback
        + 0.7 * health
        + 0.6 * budget
        + 0.35 * np.log1p(prior_tenure_months)
        - 0.06 * months_since_lapse
        + 0.2 * tier
    )
    return sigmoid(logit)


def upgrade_prompt_rate(
    users: FloatArray, budget: FloatArray, engagement: FloatArray, headroom: BoolArray
) -> FloatArray:
    """Expected weekly upgrade prompts of an account: times its users reach a feature of a
    higher plan or of an add-on not held. Accounts with money to spend and engaged users push
    against their plan's limits; an account holding everything meets no prompt."""
    return np.where(headroom, 0.4 * users * np.exp(1.0 * budget + 0.4 * engagement), 0.0)


def monthly_revenue(tier: IntArray, add_ons_held: IntArray) -> FloatArray:
    """Recurring monthly invoice total for a plan tier and add-on count."""
    return TIER_PRICE[tier] + ADD_ON_CUMULATIVE[add_ons_held]
