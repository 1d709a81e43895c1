"""Turn a finished simulation into the raw tables of the contract and the truth tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from simulator import model as m
from simulator.world import AGED_AFTER

if TYPE_CHECKING:
    from simulator.world import _Simulation

PRODUCTS = (
    [
        (f"PLAN-{t.upper()}", t, "plan", t, float(p))
        for t, p in zip(m.TIERS, m.TIER_PRICE, strict=True)
    ]
    + [(f"ADDON-{code}", name, "add_on", None, price) for code, name, price in m.ADD_ONS]
    + [(f"SERVICE-{code}", name, "service", None, price) for code, name, price in m.SERVICES]
)


def customer_ids(n: int) -> np.ndarray:
    """Stable ids C0000001.. for customers in order of first signup."""
    return np.array([f"C{i + 1:07d}" for i in range(n)], dtype=object)


def lead_ids(n: int) -> np.ndarray:
    """Stable ids L00000001.. for leads in order of creation."""
    return np.array([f"L{i + 1:08d}" for i in range(n)], dtype=object)


def _ns(dates: np.ndarray) -> np.ndarray:
    return dates.astype("datetime64[ns]")


def _dated(frame: pd.DataFrame, column: str, end: np.datetime64) -> pd.DataFrame:
    """Rows that happened before the end of history, in time order (stable)."""
    if frame.empty:  # an event that never happened in a small world: no dated column yet
        return frame.reset_index(drop=True)
    frame = frame[frame[column].values < end]
    return frame.sort_values(column, kind="stable").reset_index(drop=True)


def build_tables(sim: _Simulation) -> dict[str, pd.DataFrame]:
    """The raw tables as of the end of the simulated history."""
    end = sim.starts[sim.months]
    c, leads, log = sim.c, sim.leads, sim.log
    cid, lid = customer_ids(len(c)), lead_ids(len(leads))
    product_ids = np.array([p[0] for p in PRODUCTS], dtype=object)

    lifecycle = _dated(log.frame("lifecycle", ["customer", "date", "event"]), "date", end)
    churned = lifecycle[lifecycle["event"] == "churn"].groupby("customer")["date"].max()
    churn_date = np.full(len(c), np.datetime64("NaT"), "datetime64[D]")
    churn_date[churned.index.to_numpy(np.int64)] = churned.to_numpy()
    signup = sim.date(c.signup_month, c.signup_day)
    customers = pd.DataFrame(
        {
            "customer_id": cid,
            "lead_id": lid[c.lead],
            "signup_date": _ns(signup),
            "status": np.where(c.active, "active", "former"),
            "churn_date": _ns(np.where(c.active, np.datetime64("NaT"), churn_date)),
            "plan_tier": np.array(m.TIERS, dtype=object)[c.tier],
            "signup_plan_tier": np.array(m.TIERS, dtype=object)[c.signup_tier],
            "contract": np.where(c.annual, "annual", "monthly"),
            "industry": np.array(m.INDUSTRIES, dtype=object)[c.industry],
            "company_size": np.array(m.SIZES, dtype=object)[c.size],
            "seats": c.seats,
            "acquisition_source": np.array(m.SOURCES, dtype=object)[c.source],
        }
    )
    lifecycle_events = pd.DataFrame(
        {
            "customer_id": cid[lifecycle["customer"].to_numpy(np.int64)],
            "event_date": _ns(lifecycle["date"].to_numpy()),
            "event": lifecycle["event"].to_numpy(object),
        }
    )

    orders = _dated(
        log.frame("orders", ["customer", "date", "product", "amount", "new"]), "date", end
    )
    orders_table = pd.DataFrame(
        {
            "order_id": np.arange(1, len(orders) + 1, dtype=np.int64),
            "customer_id": cid[orders["customer"].to_numpy(np.int64)],
            "order_date": _ns(orders["date"].to_numpy()),
            "product_id": product_ids[orders["product"].to_numpy(np.int64)],
            "amount": orders["amount"].to_numpy(float),
            "order_type": np.where(orders["new"].to_numpy(bool), "new", "recurring"),
        }
    )
    products = pd.DataFrame(
        PRODUCTS, columns=["product_id", "name", "kind", "tier", "monthly_price"]
    ).rename(columns={"monthly_price": "price"})

    changes = _dated(
        log.frame("plan_changes", ["customer", "date", "from_tier", "to_tier"]), "date", end
    )
    tiers = np.array(m.TIERS, dtype=object)
    plan_changes = pd.DataFrame(
        {
            "customer_id": cid[changes["customer"].to_numpy(np.int64)],
            "change_date": _ns(changes["date"].to_numpy()),
            "from_tier": tiers[changes["from_tier"].to_numpy(np.int64)],
            "to_tier": tiers[changes["to_tier"].to_numpy(np.int64)],
            "direction": np.where(
                changes["to_tier"].to_numpy() > changes["from_tier"].to_numpy(),
                "upgrade",
                "downgrade",
            ),
        }
    )

    usage = _dated(
        log.frame("usage", ["customer", "week", "users", "sessions", "invites", "prompts"]),
        "week",
        end,
    )
    usage_weekly = pd.DataFrame(
        {
            "customer_id": cid[usage["customer"].to_numpy(np.int64)],
            "week_start": _ns(usage["week"].to_numpy()),
            "active_users": usage["users"].to_numpy(np.int64),
            "sessions": usage["sessions"].to_numpy(np.int64),
            "invites_sent": usage["invites"].to_numpy(np.int64),
            "upgrade_prompts": usage["prompts"].to_numpy(np.int64),
        }
    )

    tickets = _dated(log.frame("tickets", ["customer", "date", "severity", "hours"]), "date", end)
    support_tickets = pd.DataFrame(
        {
            "ticket_id": np.arange(1, len(tickets) + 1, dtype=np.int64),
            "customer_id": cid[tickets["customer"].to_numpy(np.int64)],
            "opened_at": _ns(tickets["date"].to_numpy()),
            "severity": np.array(m.SEVERITIES, dtype=object)[
                tickets["severity"].to_numpy(np.int64)
            ],
            "resolution_hours": tickets["hours"].to_numpy(float),
        }
    )

    nps = _dated(log.frame("nps", ["customer", "date", "score"]), "date", end)
    nps_surveys = pd.DataFrame(
        {
            "survey_id": np.arange(1, len(nps) + 1, dtype=np.int64),
            "customer_id": cid[nps["customer"].to_numpy(np.int64)],
            "survey_date": _ns(nps["date"].to_numpy()),
            "score": nps["score"].to_numpy(np.int64),
        }
    )

    touches = log.frame("touches", ["kind", "entity", "date", "campaign"])
    touches["position"] = np.arange(len(touches))
    touches = _dated(touches, "date", end)
    touch_id = np.zeros(sim._touch_count, np.int64)
    touch_id[touches["position"].to_numpy(np.int64)] = np.arange(1, len(touches) + 1)
    entity = touches["entity"].to_numpy(np.int64)
    is_lead = touches["kind"].to_numpy() == "lead"
    marketing_touches = pd.DataFrame(
        {
            "touch_id": np.arange(1, len(touches) + 1, dtype=np.int64),
            "entity_kind": touches["kind"].to_numpy(object),
            "entity_id": np.where(
                is_lead, lid[np.where(is_lead, entity, 0)], cid[np.where(is_lead, 0, entity)]
            ),
            "touch_date": _ns(touches["date"].to_numpy()),
            "campaign": touches["campaign"].to_numpy(object),
            "channel": np.full(len(touches), "email", dtype=object),
        }
    )
    responses = _dated(log.frame("responses", ["touch", "date", "response"]), "date", end)
    marketing_responses = pd.DataFrame(
        {
            "touch_id": touch_id[responses["touch"].to_numpy(np.int64)],
            "response_date": _ns(responses["date"].to_numpy()),
            "response": responses["response"].to_numpy(object),
        }
    )

    refs = _dated(log.frame("referrals", ["customer", "lead", "date"]), "date", end)
    referrals = pd.DataFrame(
        {
            "referral_id": np.arange(1, len(refs) + 1, dtype=np.int64),
            "referrer_customer_id": cid[refs["customer"].to_numpy(np.int64)],
            "lead_id": lid[refs["lead"].to_numpy(np.int64)],
            "referral_date": _ns(refs["date"].to_numpy()),
        }
    )

    visits = _dated(log.frame("visits", ["lead", "date", "pages"]), "date", end)
    web_visits = pd.DataFrame(
        {
            "visit_id": np.arange(1, len(visits) + 1, dtype=np.int64),
            "lead_id": lid[visits["lead"].to_numpy(np.int64)],
            "visit_date": _ns(visits["date"].to_numpy()),
            "pages": visits["pages"].to_numpy(np.int64),
        }
    )

    created = sim.date(leads.created_month, leads.created_day)
    keep = created < end
    converted = leads.customer >= 0
    age_months = sim.months - leads.created_month
    status = np.where(converted, "converted", np.where(age_months > AGED_AFTER, "aged", "open"))
    converted_at = np.full(len(leads), np.datetime64("NaT"), "datetime64[D]")
    converted_at[converted] = signup[leads.customer[converted]]
    leads_table = pd.DataFrame(
        {
            "lead_id": lid,
            "created_at": _ns(created),
            "source": np.array(m.SOURCES, dtype=object)[leads.source],
            "company_size": np.array(m.SIZES, dtype=object)[leads.size],
            "industry": np.array(m.INDUSTRIES, dtype=object)[leads.industry],
            "employees": leads.employees,
            "lead_score": leads.score,
            "status": status,
            "customer_id": pd.Series(cid[np.maximum(leads.customer, 0)]).where(converted, None),
            "converted_at": _ns(converted_at),
        }
    )[keep].reset_index(drop=True)

    return {
        "customers": customers,
        "lifecycle_events": lifecycle_events,
        "orders": orders_table,
        "products": products,
        "plan_changes": plan_changes,
        "usage_weekly": usage_weekly,
        "support_tickets": support_tickets,
        "nps_surveys": nps_surveys,
        "marketing_touches": marketing_touches,
        "marketing_responses": marketing_responses,
        "referrals": referrals,
        "web_visits": web_visits,
        "leads": leads_table,
    }


def build_truth(sim: _Simulation) -> dict[str, pd.DataFrame]:
    """Per-cutoff true probabilities (expected revenue for clv) of every eligible entity."""
    cid, lid = customer_ids(len(sim.c)), lead_ids(len(sim.leads))
    cust = pd.concat(sim.truth["customer"], ignore_index=True)
    cutoff = _ns(sim.starts[cust["cutoff"].to_numpy(np.int64)])
    keys = {"customer_id": cid[cust["customer"].to_numpy(np.int64)], "cutoff": cutoff}
    truth = {
        "churn": pd.DataFrame({**keys, "probability": cust["churn"].to_numpy()}),
        "expansion": pd.DataFrame(
            {
                **keys,
                "probability": cust["expansion"].to_numpy(),
                "cross_sell_probability": cust["cross_sell"].to_numpy(),
                "upsell_probability": cust["upsell"].to_numpy(),
            }
        ),
        "referral": pd.DataFrame({**keys, "probability": cust["referral"].to_numpy()}),
        "clv": pd.DataFrame({**keys, "expected_revenue": cust["clv"].to_numpy()}),
    }
    dormant = pd.concat(sim.truth["dormant"], ignore_index=True)
    entity = dormant["entity"].to_numpy(np.int64)
    is_lead = dormant["kind"].to_numpy() == "lead"
    truth["reactivation"] = pd.DataFrame(
        {
            "entity_kind": dormant["kind"].to_numpy(object),
            "entity_id": np.where(
                is_lead, lid[np.where(is_lead, entity, 0)], cid[np.where(is_lead, 0, entity)]
            ),
            "cutoff": _ns(sim.starts[dormant["cutoff"].to_numpy(np.int64)]),
            "probability": dormant["reactivation"].to_numpy(),
        }
    )
    return truth
