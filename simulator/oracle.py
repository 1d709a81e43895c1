"""Ground truth: the true outcome probabilities of every eligible entity at a cutoff.

The oracle knows the latent state determined before the cutoff T: the state at the end of
month T - 1, which drove the last events a model can see. Every draw made at or after T is
future, including the latent step at the month boundary that opens month T, so the truth
averages over it as over the rest of the future. For customers it averages the exact
(Rao-Blackwellised) outcome probabilities over sampled latent paths that start with that step,
using the same hazard functions as the simulation, so the only error left is the small Monte
Carlo error of the paths. For aged leads the step is a decay plus a rare exponential spike,
so the average over it is exact (in closed form).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import special

from simulator import model as m
from simulator.model import Calibration

if TYPE_CHECKING:
    from simulator.world import Customers, Leads

PATHS = 8  # latent paths per customer, drawn in antithetic pairs (keep it even)
CLV_MONTHS = 12
SHORT_MONTHS = 3
CAN_UP = (np.arange(len(m.TIERS)) < len(m.TIERS) - 1).astype(float)
CAN_DOWN = (np.arange(len(m.TIERS)) > 0).astype(float)


def customer_truth(
    cal: Calibration,
    c: Customers,
    idx: np.ndarray,
    cutoff: int,
    start_month: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """True 3-month churn, expansion (cross-sell, upsell) and referral probabilities, and the
    expected 12-month revenue, of the active customers `idx` at the start of month `cutoff`.

    `c` holds the state at the end of month `cutoff - 1`, before the latent step into month
    `cutoff`: each path draws that step first, as the simulation does next."""
    n, k = len(idx), PATHS
    shape = (n, k)

    def tile(values: np.ndarray) -> np.ndarray:
        return np.repeat(values[:, None], k, axis=1)

    latent = {
        name: tile(getattr(c, name)[idx]) for name in ("health", "engagement", "budget", "advocacy")
    }
    means = {name: tile(getattr(c, "mean_" + name)[idx]) for name in latent}
    annual = tile(c.annual[idx])
    spell = tile(c.spell_start[idx])
    tier0, add0 = c.tier[idx], c.add_ons[idx]
    n_tiers, n_add = len(m.TIERS), len(m.ADD_ONS) + 1

    tier_dist = np.zeros((n, k, n_tiers))
    tier_dist[np.arange(n), :, tier0] = 1.0
    add_dist = np.zeros((n, k, n_add))
    add_dist[np.arange(n), :, add0] = 1.0
    no_expansion = tier_dist.copy()  # P(no expansion yet, tier = t)
    no_upsell = tier_dist.copy()  # P(no upsell yet, tier = t)
    no_cross = np.ones(shape)
    no_referral = np.ones(shape)
    alive = np.ones(shape)
    p_expansion = np.zeros(shape)
    p_cross = np.zeros(shape)
    p_upsell = np.zeros(shape)
    p_referral = np.zeros(shape)
    revenue = np.zeros(shape)
    out: dict[str, np.ndarray] = {}

    for j in range(CLV_MONTHS):
        month = cutoff + j
        for name in latent:  # the step into this month, drawn at its start
            latent[name] = (
                latent[name]
                + m.PULL * (means[name] - latent[name])
                + m.INNOVATION[name] * _antithetic_normal(rng, shape)
            )
        moy = np.full(shape, int(m.calendar_month(month, start_month)))
        h, e, b, a = (latent[name] for name in ("health", "engagement", "budget", "advocacy"))
        tenure = (month - spell).astype(float)
        renewal = annual & (tenure % 12 == 0)
        churn = m.churn_hazard(cal, h, e, b, tenure, annual, renewal, moy)
        cross = m.cross_sell_hazard(cal, e, b, h, np.zeros(shape, np.int64), moy)
        # Hazards for every tier at once: only the top (bottom) tier cannot go up (down).
        up = m.upsell_hazard(cal, b, e, h, np.zeros(shape, np.int64))[..., None] * CAN_UP
        down = m.downgrade_hazard(cal, b, h, np.ones(shape, np.int64))[..., None] * CAN_DOWN
        refer = m.referral_hazard(cal, a, h)
        service = m.services_hazard(cal, b, e)

        # Revenue billed this month if alive at its start: plan, add-ons, new add-on, services.
        can_buy = add_dist[..., :-1]
        month_revenue = (
            tier_dist @ m.TIER_PRICE
            + add_dist @ m.ADD_ON_CUMULATIVE
            + cross * (can_buy @ m.ADD_ON_PRICE)
            + service * m.SERVICE_MEAN_PRICE
        )
        revenue += alive * month_revenue

        if j < SHORT_MONTHS:
            has_cross = cross * (add0 < n_add - 1)[:, None]
            expand_t = 1.0 - (1.0 - has_cross[..., None]) * (1.0 - up)
            p_expansion += alive * (no_expansion * expand_t).sum(-1)
            p_upsell += alive * (no_upsell * up).sum(-1)
            p_cross += alive * no_cross * has_cross
            p_referral += alive * no_referral * refer
            no_expansion = _shift_down(no_expansion * (1.0 - expand_t), down)
            no_upsell = _shift_down(no_upsell * (1.0 - up), down)
            no_cross *= 1.0 - has_cross
            no_referral *= 1.0 - refer

        upgraded = tier_dist * up
        tier_dist = _shift_down(tier_dist * (1.0 - up), down)
        tier_dist[..., 1:] += upgraded[..., :-1]
        bought = can_buy * cross[..., None]
        add_dist[..., :-1] -= bought
        add_dist[..., 1:] += bought
        alive = alive * (1.0 - churn)
        if j == SHORT_MONTHS - 1:
            out["churn"] = 1.0 - alive.mean(1)

    return pd.DataFrame(
        {
            "customer": idx,
            "cutoff": np.full(n, cutoff),
            "churn": out["churn"],
            "expansion": p_expansion.mean(1),
            "cross_sell": p_cross.mean(1),
            "upsell": p_upsell.mean(1),
            "referral": p_referral.mean(1),
            "clv": revenue.mean(1),
        }
    )


def _antithetic_normal(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Standard normal draws in mirrored pairs (z, -z) along the paths: the part of each
    path average that is linear in the draws cancels, which removes most Monte Carlo error."""
    half = rng.normal(0, 1, (shape[0], shape[1] // 2))
    return np.concatenate([half, -half], axis=1)


def _shift_down(dist: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Apply one month of downgrades (tier t -> t-1 with probability down[t])."""
    moved = dist * down
    result = dist - moved
    result[..., :-1] += moved[..., 1:]
    return result


def expected_reactivation_probability(
    cal: Calibration,
    fit: np.ndarray,
    interest: np.ndarray,
    age_months: np.ndarray,
    size: np.ndarray,
) -> np.ndarray:
    """Probability that an aged lead converts within 60 days of a reactivation touch in month
    `cutoff`, given its interest at the end of month `cutoff - 1` and that outreach picks it.

    The interest step into the month is future: interest' = decay * interest + spike. Outreach
    picks a lead with odds proportional to exp(tilt * interest'), so given the touch a spike
    is likelier and larger (Bayes: its probability becomes r M / (1 - r + r M) with
    M = E[exp(tilt * size)] = 1 / (1 - tilt * mean), and its size exponential with mean
    mean * M). The average of the logistic over an exponential size is closed-form:
    E[sigmoid(c + k E)] = 2F1(1, v; 1 + v; -exp(-c)) with v = 1 / (k * mean), which follows
    from substituting u = exp(-E / mean), uniform on (0, 1). The outreach normaliser (the
    population mean of the weights) is the same for every lead and cancels."""
    decayed = m.INTEREST_DECAY * interest
    tilt = 1.0 / (1.0 - m.TARGETING_TILT * m.SPIKE_MEAN)
    spike_rate = m.SPIKE_RATE * tilt / (1.0 - m.SPIKE_RATE + m.SPIKE_RATE * tilt)
    spike_mean = m.SPIKE_MEAN * tilt
    logit = m.reactivation_logit(cal, fit, decayed, age_months, size)
    v = 1.0 / (m.REACTIVATION_INTEREST * spike_mean)
    spiked = special.hyp2f1(1.0, v, 1.0 + v, -np.exp(-logit))
    return (1.0 - spike_rate) * m.sigmoid(logit) + spike_rate * spiked


def dormant_truth(
    cal: Calibration,
    leads: Leads,
    aged: np.ndarray,
    c: Customers,
    former: np.ndarray,
    cutoff: int,
) -> pd.DataFrame:
    """True probability that each aged lead or former customer converts (returns) within 60
    days of a touch by the outreach of month `cutoff`, from the state at the end of month
    `cutoff - 1` (a former customer's state stays as it was at lapse, so only leads move)."""
    lead_p = expected_reactivation_probability(
        cal,
        leads.fit[aged],
        leads.interest[aged],
        (cutoff - leads.created_month[aged]).astype(float),
        leads.size[aged],
    )
    former_p = m.winback_probability(
        cal,
        c.health[former],
        c.budget[former],
        (c.prior_tenure[former] + c.churn_month[former] - c.spell_start[former]).astype(float),
        (cutoff - c.churn_month[former]).astype(float),
        c.tier[former],
    )
    return pd.DataFrame(
        {
            "kind": np.concatenate([np.full(len(aged), "lead"), np.full(len(former), "customer")]),
            "entity": np.concatenate([aged, former]),
            "cutoff": np.full(len(aged) + len(former), cutoff),
            "reactivation": np.concatenate([lead_p, former_p]),
        }
    )
