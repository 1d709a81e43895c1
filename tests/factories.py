"""Tiny hand-made raw tables for tests whose expected values are computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd


def tiny_raw() -> dict[str, pd.DataFrame]:
    """Two customers and two leads, with events before and after 2024-07-01."""
    ts = pd.Timestamp
    customers = pd.DataFrame(
        {
            "customer_id": ["C1", "C2"],
            "lead_id": ["L1", "L2"],
            "signup_date": [ts("2024-01-10"), ts("2024-03-05")],
            "status": ["active", "former"],
            "churn_date": [pd.NaT, ts("2024-09-15")],
            "plan_tier": ["pro", "basic"],
            "signup_plan_tier": ["basic", "basic"],
            "contract": ["annual", "monthly"],
            "industry": ["retail", "software"],
            "company_size": ["mid", "small"],
            "seats": np.array([10, 3], dtype=np.int64),
            "acquisition_source": ["webinar", "organic"],
        }
    )
    events = pd.DataFrame(
        {
            "customer_id": ["C1", "C2", "C2"],
            "event_date": [ts("2024-01-10"), ts("2024-03-05"), ts("2024-09-15")],
            "event": ["signup", "signup", "churn"],
        }
    )
    orders = pd.DataFrame(
        {
            "order_id": np.arange(1, 8, dtype=np.int64),
            "customer_id": ["C1", "C1", "C1", "C1", "C2", "C2", "C1"],
            "order_date": [
                ts("2024-01-10"),
                ts("2024-05-01"),
                ts("2024-06-01"),
                ts("2024-06-12"),
                ts("2024-03-05"),
                ts("2024-06-01"),
                ts("2024-08-01"),
            ],
            "product_id": ["PLAN-BASIC", "PLAN-BASIC", "PLAN-PRO", "ADDON-A01"]
            + ["PLAN-BASIC"] * 3,
            "amount": [39.0, 39.0, 99.0, 19.0, 39.0, 39.0, 99.0],
            "order_type": ["new", "recurring", "recurring", "new", "new", "recurring", "recurring"],
        }
    )
    products = pd.DataFrame(
        {
            "product_id": ["PLAN-BASIC", "PLAN-PRO", "PLAN-BUSINESS", "ADDON-A01", "ADDON-A02"],
            "name": ["basic", "pro", "business", "analytics", "integrations"],
            "kind": ["plan", "plan", "plan", "add_on", "add_on"],
            "tier": ["basic", "pro", "business", None, None],
            "price": [39.0, 99.0, 249.0, 19.0, 15.0],
        }
    )
    changes = pd.DataFrame(
        {
            "customer_id": ["C1"],
            "change_date": [ts("2024-05-20")],
            "from_tier": ["basic"],
            "to_tier": ["pro"],
            "direction": ["upgrade"],
        }
    )
    weeks = pd.date_range("2024-03-04", "2024-06-24", freq="7D")
    usage = pd.DataFrame(
        {
            "customer_id": ["C1"] * len(weeks),
            "week_start": weeks,
            "active_users": np.full(len(weeks), 5, dtype=np.int64),
            # 10 sessions a week, then 4 in the last 4 complete weeks before 2024-07-01
            "sessions": np.where(weeks >= ts("2024-06-03"), 4, 10).astype(np.int64),
            "invites_sent": np.full(len(weeks), 1, dtype=np.int64),
            "upgrade_prompts": np.full(len(weeks), 1, dtype=np.int64),
        }
    )
    tickets = pd.DataFrame(
        {
            "ticket_id": np.array([1, 2], dtype=np.int64),
            "customer_id": ["C1", "C1"],
            "opened_at": [ts("2024-06-20"), ts("2024-07-20")],
            "severity": ["critical", "low"],
            "resolution_hours": [30.0, 2.0],
        }
    )
    nps = pd.DataFrame(
        {
            "survey_id": np.array([1, 2, 3], dtype=np.int64),
            "customer_id": ["C1", "C1", "C1"],
            "survey_date": [ts("2024-02-15"), ts("2024-05-15"), ts("2024-08-15")],
            "score": np.array([9, 6, 10], dtype=np.int64),
        }
    )
    touches = pd.DataFrame(
        {
            "touch_id": np.array([1, 2, 3], dtype=np.int64),
            "entity_kind": ["customer", "lead", "lead"],
            "entity_id": ["C1", "L3", "L3"],
            "touch_date": [ts("2024-06-04"), ts("2024-05-04"), ts("2024-08-04")],
            "campaign": ["newsletter", "newsletter", "reactivation"],
            "channel": ["email"] * 3,
        }
    )
    responses = pd.DataFrame(
        {
            "touch_id": np.array([1, 2, 3], dtype=np.int64),
            "response_date": [ts("2024-06-05"), ts("2024-05-06"), ts("2024-08-05")],
            "response": ["open", "open", "convert"],
        }
    )
    referrals = pd.DataFrame(
        {
            "referral_id": np.array([1], dtype=np.int64),
            "referrer_customer_id": ["C1"],
            "lead_id": ["L4"],
            "referral_date": [ts("2024-06-25")],
        }
    )
    leads = pd.DataFrame(
        {
            "lead_id": ["L1", "L2", "L3", "L4"],
            "created_at": [ts("2023-12-20"), ts("2024-02-01"), ts("2023-05-01"), ts("2024-06-25")],
            "source": ["webinar", "organic", "partner", "referral"],
            "company_size": ["mid", "small", "large", "small"],
            "industry": ["retail", "software", "finance", "retail"],
            "employees": np.array([80, 20, 400, 25], dtype=np.int64),
            "lead_score": np.array([70, 55, 40, 62], dtype=np.int64),
            "status": ["converted", "converted", "aged", "open"],
            "customer_id": ["C1", "C2", None, None],
            "converted_at": [ts("2024-01-10"), ts("2024-03-05"), pd.NaT, pd.NaT],
        }
    )
    visits = pd.DataFrame(
        {
            "visit_id": np.array([1, 2], dtype=np.int64),
            "lead_id": ["L3", "L3"],
            "visit_date": [ts("2024-05-02"), ts("2024-06-15")],
            "pages": np.array([3, 1], dtype=np.int64),
        }
    )
    return {
        "customers": customers,
        "lifecycle_events": events,
        "orders": orders,
        "products": products,
        "plan_changes": changes,
        "usage_weekly": usage,
        "support_tickets": tickets,
        "nps_surveys": nps,
        "marketing_touches": touches,
        "marketing_responses": responses,
        "referrals": referrals,
        "web_visits": visits,
        "leads": leads,
    }
