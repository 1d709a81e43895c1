"""Business figures measured from the raw tables alone, as an analyst would measure them.

These are what the simulator is calibrated against (the domain chapter's figures) and what
`clv simulate` and `make demo` print.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

# The domain chapter's figures and the tolerance the tests allow around each.
TARGETS: dict[str, tuple[float, float]] = {
    "active_customers": (12_400, 0.06),
    "former_customers": (4_200, 0.10),
    "aged_leads": (23_600, 0.08),
    "annual_retention": (0.73, 0.02),
    "expansion_rate": (0.083, 0.012),
    "referral_rate": (0.12, 0.015),
    "reactivation_touch_rate": (0.15, 0.02),
    "reactivation_conversion": (0.032, 0.008),
    "winback_conversion": (0.05, 0.015),
    "lifetime_revenue": (4_247.0, 0.08),
}
COUNT_FIGURES = ("active_customers", "former_customers", "aged_leads")


@dataclass(frozen=True)
class Summary:
    """Marginal figures of a simulated (or real) database as of its last day."""

    as_of: str
    active_customers: int
    former_customers: int
    aged_leads: int
    annual_retention: float
    expansion_rate: float
    referral_rate: float
    reactivation_touch_rate: float
    reactivation_conversion: float
    winback_conversion: float
    lifetime_revenue: float
    monthly_revenue_per_customer: float

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def active_at(lifecycle_events: pd.DataFrame, when: pd.Timestamp) -> pd.Index:
    """Customer ids whose last lifecycle event before `when` is a signup or a return."""
    before = lifecycle_events[lifecycle_events["event_date"] < when]
    last = before.sort_values("event_date", kind="stable").groupby("customer_id")["event"].last()
    return last.index[last.isin(["signup", "return"])]


def _conversion(raw: dict[str, pd.DataFrame], campaign: str, end: pd.Timestamp) -> float:
    """Share of a campaign's touches (all history, 60-day outcome observed) that converted."""
    touches = raw["marketing_touches"]
    sent = touches[
        (touches["campaign"] == campaign) & (touches["touch_date"] <= end - pd.Timedelta(days=61))
    ]
    responses = raw["marketing_responses"]
    converted = responses[responses["response"] == "convert"]
    joined = sent.merge(converted, on="touch_id", how="left")
    within = (joined["response_date"] - joined["touch_date"]) <= pd.Timedelta(days=60)
    return float(within.groupby(joined["touch_id"]).any().mean()) if len(sent) else float("nan")


def summarize(raw: dict[str, pd.DataFrame], as_of: pd.Timestamp) -> Summary:
    """Measure the chapter's figures over the 12 months before `as_of`."""
    year_ago = as_of - pd.DateOffset(months=12)
    customers, events = raw["customers"], raw["lifecycle_events"]
    cohort = active_at(events, year_ago)
    window = events[(events["event_date"] >= year_ago) & (events["event_date"] < as_of)]
    lapsed = window.loc[window["event"] == "churn", "customer_id"]
    retention = 1.0 - float(pd.Index(cohort).isin(lapsed).mean())

    orders = raw["orders"]
    in_year = orders[(orders["order_date"] >= year_ago) & (orders["order_date"] < as_of)]
    kinds = raw["products"].set_index("product_id")["kind"]
    new_add_ons = in_year[
        (in_year["order_type"] == "new") & (in_year["product_id"].map(kinds) == "add_on")
    ]
    changes = raw["plan_changes"]
    upgrades = changes[
        (changes["direction"] == "upgrade")
        & (changes["change_date"] >= year_ago)
        & (changes["change_date"] < as_of)
    ]
    expanded = set(new_add_ons["customer_id"]) | set(upgrades["customer_id"])
    expansion = float(pd.Index(cohort).isin(list(expanded)).mean())

    refs = raw["referrals"]
    referrers = refs.loc[
        (refs["referral_date"] >= year_ago) & (refs["referral_date"] < as_of),
        "referrer_customer_id",
    ]
    referral = float(pd.Index(cohort).isin(referrers).mean())

    leads = raw["leads"]
    converted_by = leads["converted_at"].fillna(pd.Timestamp.max)
    aged_then = leads[
        (leads["created_at"] < year_ago - pd.DateOffset(months=12)) & (converted_by >= year_ago)
    ]
    touches = raw["marketing_touches"]
    reached = touches.loc[
        (touches["campaign"] == "reactivation")
        & (touches["touch_date"] >= year_ago)
        & (touches["touch_date"] < as_of),
        "entity_id",
    ]
    touch_rate = float(aged_then["lead_id"].isin(reached).mean())

    customer_months = sum(
        len(active_at(events, year_ago + pd.DateOffset(months=k))) for k in range(12)
    )
    arpa = float(in_year["amount"].sum()) / max(customer_months, 1)
    monthly_churn = 1.0 - retention ** (1.0 / 12.0)
    return Summary(
        as_of=str(as_of.date()),
        active_customers=int((customers["status"] == "active").sum()),
        former_customers=int((customers["status"] == "former").sum()),
        aged_leads=int((leads["status"] == "aged").sum()),
        annual_retention=retention,
        expansion_rate=expansion,
        referral_rate=referral,
        reactivation_touch_rate=touch_rate,
        reactivation_conversion=_conversion(raw, "reactivation", as_of),
        winback_conversion=_conversion(raw, "winback", as_of),
        lifetime_revenue=arpa / monthly_churn if monthly_churn > 0 else float("inf"),
        monthly_revenue_per_customer=arpa,
    )


def deviations(summary: Summary, scale: float) -> dict[str, tuple[float, float, float, bool]]:
    """Per figure: measured, target (counts scaled), tolerance, and whether it is within it.

    Counts use a relative tolerance, rates an absolute one.
    """
    result = {}
    values = summary.as_dict()
    for name, (target, tol) in TARGETS.items():
        measured = float(values[name])
        if name in COUNT_FIGURES:
            target = target * scale
            ok = abs(measured - target) <= tol * target
        elif name == "lifetime_revenue":
            ok = abs(measured - target) <= tol * target
        else:
            ok = abs(measured - target) <= tol
        result[name] = (measured, target, tol, ok)
    return result
