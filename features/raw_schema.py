"""The raw-table contract: tables, columns, types, keys and allowed values.

The simulator writes these tables and a user's own data must match them; `validate_raw`
checks a set of tables before any feature is computed and names what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True)
class Column:
    """One column: its kind (string, datetime, int, float, bool) and whether nulls are allowed."""

    kind: str
    nullable: bool = False
    allowed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Table:
    """One raw table: its columns, its key (unique per row) and its event-date column."""

    columns: dict[str, Column]
    key: tuple[str, ...] = ()
    date: str | None = None
    references: dict[str, str] = field(default_factory=dict)  # column -> table


S, D, INT, F = Column("string"), Column("datetime"), Column("int"), Column("float")

RAW_SCHEMA: dict[str, Table] = {
    "customers": Table(
        {
            "customer_id": S,
            "lead_id": Column("string", nullable=True),
            "signup_date": D,
            "status": Column("string", allowed=("active", "former")),
            "churn_date": Column("datetime", nullable=True),
            "plan_tier": Column("string", allowed=("basic", "pro", "business")),
            "signup_plan_tier": Column("string", allowed=("basic", "pro", "business")),
            "contract": Column("string", allowed=("monthly", "annual")),
            "industry": S,
            "company_size": Column("string", allowed=("small", "mid", "large")),
            "seats": INT,
            "acquisition_source": S,
        },
        key=("customer_id",),
        date="signup_date",
    ),
    "lifecycle_events": Table(
        {
            "customer_id": S,
            "event_date": D,
            "event": Column("string", allowed=("signup", "churn", "return")),
        },
        date="event_date",
        references={"customer_id": "customers"},
    ),
    "orders": Table(
        {
            "order_id": INT,
            "customer_id": S,
            "order_date": D,
            "product_id": S,
            "amount": F,
            "order_type": Column("string", allowed=("new", "recurring")),
        },
        key=("order_id",),
        date="order_date",
        references={"customer_id": "customers", "product_id": "products"},
    ),
    "products": Table(
        {
            "product_id": S,
            "name": S,
            "kind": Column("string", allowed=("plan", "add_on", "service")),
            "tier": Column("string", nullable=True),
            "price": F,
        },
        key=("product_id",),
    ),
    "plan_changes": Table(
        {
            "customer_id": S,
            "change_date": D,
            "from_tier": Column("string", allowed=("basic", "pro", "business")),
            "to_tier": Column("string", allowed=("basic", "pro", "business")),
            "direction": Column("string", allowed=("upgrade", "downgrade")),
        },
        date="change_date",
        references={"customer_id": "customers"},
    ),
    "usage_weekly": Table(
        {
            "customer_id": S,
            "week_start": D,
            "active_users": INT,
            "sessions": INT,
            "invites_sent": INT,
            "upgrade_prompts": INT,  # times users met a feature of a higher plan or add-on
        },
        key=("customer_id", "week_start"),
        date="week_start",
        references={"customer_id": "customers"},
    ),
    "support_tickets": Table(
        {
            "ticket_id": INT,
            "customer_id": S,
            "opened_at": D,
            "severity": Column("string", allowed=("low", "medium", "high", "critical")),
            "resolution_hours": F,
        },
        key=("ticket_id",),
        date="opened_at",
        references={"customer_id": "customers"},
    ),
    "nps_surveys": Table(
        {"survey_id": INT, "customer_id": S, "survey_date": D, "score": INT},
        key=("survey_id",),
        date="survey_date",
        references={"customer_id": "customers"},
    ),
    "marketing_touches": Table(
        {
            "touch_id": INT,
            "entity_kind": Column("string", allowed=("lead", "customer")),
            "entity_id": S,
            "touch_date": D,
            "campaign": S,
            "channel": S,
        },
        key=("touch_id",),
        date="touch_date",
    ),
    "marketing_responses": Table(
        {
            "touch_id": INT,
            "response_date": D,
            "response": Column("string", allowed=("open", "click", "convert")),
        },
        date="response_date",
        references={"touch_id": "marketing_touches"},
    ),
    "referrals": Table(
        {"referral_id": INT, "referrer_customer_id": S, "lead_id": S, "referral_date": D},
        key=("referral_id",),
        date="referral_date",
        references={"referrer_customer_id": "customers", "lead_id": "leads"},
    ),
    "web_visits": Table(
        {"visit_id": INT, "lead_id": S, "visit_date": D, "pages": INT},
        key=("visit_id",),
        date="visit_date",
        references={"lead_id": "leads"},
    ),
    "leads": Table(
        {
            "lead_id": S,
            "created_at": D,
            "source": S,
            "company_size": Column("string", allowed=("small", "mid", "large")),
            "industry": S,
            "employees": INT,
            "lead_score": INT,  # the marketing system's 0-100 fit score at capture
            "status": Column("string", allowed=("open", "aged", "converted")),
            "customer_id": Column("string", nullable=True),
            "converted_at": Column("datetime", nullable=True),
        },
        key=("lead_id",),
        date="created_at",
        references={"customer_id": "customers"},
    ),
}


def kind_of(series: pd.Series) -> str:
    """The schema kind of a pandas column."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
        non_null = series.dropna()
        if non_null.empty or isinstance(non_null.iloc[0], str):
            return "string"
        return type(non_null.iloc[0]).__name__
    return str(dtype)
