"""Names and types of every feature, per feature view and per feature service.

Kept free of Feast so the pure transforms and the training code can use it; `repo.py` turns
it into Feast objects. Integers are Feast Int64, the rest Float64 (NaN = not observed).
"""

from __future__ import annotations

# -- customer_features: one row per active customer per monthly cutoff ------------------------
CUSTOMER_INT = [
    "returned_customer",  # 1 = came back after a lapse
    "annual_contract",  # 1 = annual commitment (can lapse only at renewal)
    "month_of_year",  # calendar month of the cutoff (seasonality)
    "plan_tier_rank",  # 0 basic, 1 pro, 2 business
    "upsell_headroom",  # plan tiers above the current one (what can still be upsold)
    "add_ons_available",  # add-ons not held yet (what can still be cross-sold)
    "orders_1m", "orders_3m", "orders_12m",  # frequency: orders in the last 1/3/12 months
    "order_days_lifetime",  # distinct days with an order in the current spell (BG/NBD input)
    "seats", "company_size_rank",  # size of the account (0 small, 1 mid, 2 large)
    "industry_code", "source_code",  # segment codes (see transforms.INDUSTRIES / SOURCES)
    "weeks_active_12w",  # weeks with any session among the last 12 complete weeks
    "email_opens_90d", "email_clicks_90d",  # newsletter engagement, last 90 days
    "tickets_90d", "tickets_365d", "severe_tickets_90d",  # support load and severity
    "referrals_365d", "referrals_total",  # past referrals
    "email_opens_365d", "email_clicks_365d",  # newsletter engagement, last year
    "nps_answers_365d",  # NPS surveys answered in the last year (engaged accounts answer)
    "signup_plan_tier_rank",  # plan tier chosen at signup (budget shown at purchase)
    "upgrades_total", "downgrades_total",  # plan changes so far
    "services_orders_total",  # one-off professional services bought so far
]  # fmt: skip
CUSTOMER_FLOAT = [
    "tenure_days",  # days since the current spell started
    "days_to_renewal",  # days to the next contract anniversary
    "monthly_recurring_revenue",  # plan + add-ons held, per month
    "revenue_1m", "revenue_3m", "revenue_12m",  # monetary value, last 1/3/12 months
    "days_since_last_order", "days_since_last_purchase",  # recency: any order / a new purchase
    "services_revenue_12m", "lifetime_revenue",
    "sessions_per_week_4w", "sessions_per_week_12w",  # usage level
    "active_users_4w", "seat_utilization_4w",
    "usage_trend_4v12",  # sessions of the last 4 weeks over the last 12 (1 = flat)
    "active_users_trend_4v12",
    "usage_decline_pct",  # drop of the last 4 weeks against the last 12, in %
    "invites_per_week_4w", "invites_per_week_12w",  # in-product invitations sent (advocacy)
    "email_open_rate_365d", "days_since_last_engagement",
    "mean_resolution_hours_90d",
    "nps_last", "nps_change", "days_since_nps",  # last NPS answer and its change
    "days_since_last_referral",
    # Usage ratios over the weeks observed in the last 12 and 52 complete weeks:
    "sessions_per_user_12w", "sessions_per_user_52w",  # sessions per active user (engagement)
    "seat_utilization_12w", "seat_utilization_52w",  # active users over seats (health)
    "invites_per_user_12w", "invites_per_user_52w",  # invitations per active user (advocacy)
    "invites_per_week_52w",
    # Upgrade prompts: users meeting a feature of a higher plan or an add-on not held (budget).
    "upgrade_prompts_per_week_4w", "upgrade_prompts_per_user_12w", "upgrade_prompts_per_user_52w",
    "nps_mean_365d",  # mean NPS answer of the last year
    "add_ons_bought_per_year", "referrals_per_year",  # own purchase and referral rates
]  # fmt: skip

# -- former_customer_features: customers lapsed before the cutoff (win-back) -------------------
FORMER_INT = [
    "former_plan_tier_rank", "former_company_size_rank", "former_seats",
    "former_winback_touches",  # win-back e-mails received so far
    "former_times_lapsed", "former_tickets_before_lapse",  # tickets in the 90 days before lapse
    "former_email_opens_365d",
]  # fmt: skip
FORMER_FLOAT = [
    "former_months_since_lapse", "former_prior_tenure_months", "former_prior_spend",
    "former_monthly_revenue_before_lapse", "former_nps_last",
    "former_sessions_per_week_before_lapse", "former_days_since_last_engagement",
    "former_seat_utilization_before_lapse", "former_upgrade_prompts_per_user_before_lapse",
]  # fmt: skip

# -- lead_features: aged leads (12 months or more without a purchase) -------------------------
LEAD_INT = [
    "lead_company_size_rank", "lead_employees", "lead_source_code", "lead_industry_code",
    "lead_fit_score",  # the marketing system's 0-100 fit score at capture
    "lead_reactivation_touches",  # reactivation e-mails received so far
    "lead_opens_total", "lead_clicks_total",  # all-time e-mail engagement
    "lead_email_opens_90d", "lead_email_clicks_90d", "lead_email_opens_365d",
    "lead_web_visits_30d", "lead_web_visits_90d", "lead_web_visits_365d",  # website visits
]  # fmt: skip
LEAD_FLOAT = [
    "lead_age_days", "lead_email_open_rate_365d",
    "lead_days_since_last_engagement",  # last open or click
    "lead_days_since_last_visit",  # last website visit
]  # fmt: skip

# -- directories: every known id, so serving tells an unknown id from one without features ----
CUSTOMER_DIRECTORY_INT = ["customer_status"]  # 1 active, 2 former at the last cutoff
LEAD_DIRECTORY_INT = ["lead_status"]  # 1 open, 2 aged, 3 converted at the last cutoff

# -- request-time features, computed by the on-demand view at lookup time ----------------------
# Features that follow the calendar, not the customers: a new month always differs from a
# training window of many months, so drift reports leave them out.
CALENDAR_FEATURES = frozenset({"month_of_year"})
ON_DEMAND_FLOAT = ["revenue_per_seat_12m", "sessions_per_active_user_4w"]

VIEW_COLUMNS: dict[str, tuple[str, list[str], list[str]]] = {
    "customer_features": ("customer_id", CUSTOMER_INT, CUSTOMER_FLOAT),
    "former_customer_features": ("customer_id", FORMER_INT, FORMER_FLOAT),
    "lead_features": ("lead_id", LEAD_INT, LEAD_FLOAT),
    "customer_directory": ("customer_id", CUSTOMER_DIRECTORY_INT, []),
    "lead_directory": ("lead_id", LEAD_DIRECTORY_INT, []),
}
DIRECTORY_VIEWS = ("customer_directory", "lead_directory")
ON_DEMAND_VIEW = "customer_ratios"

# Each feature service lists exactly what its model uses.
SERVICE_VIEWS = {
    "churn_v1": ["customer_features", ON_DEMAND_VIEW],
    "expansion_v1": ["customer_features", ON_DEMAND_VIEW],
    "referral_v1": ["customer_features"],
    "clv_v1": ["customer_features", ON_DEMAND_VIEW],
    "reactivation_v1": ["lead_features", "former_customer_features"],
}
_EXCLUDE = {
    "churn_v1": {"referrals_total"},
    "expansion_v1": {"days_since_last_referral"},
    "referral_v1": {"add_ons_available", "upsell_headroom", "services_revenue_12m"},
}


def view_features(view: str) -> list[str]:
    """Feature names of a view, ints then floats (the order of its Feast schema)."""
    if view == ON_DEMAND_VIEW:
        return list(ON_DEMAND_FLOAT)
    _, ints, floats = VIEW_COLUMNS[view]
    return ints + floats


def service_features(service: str) -> list[str]:
    """The feature names a feature service serves, in order."""
    if service not in SERVICE_VIEWS:
        raise LookupError(
            f"unknown feature service {service!r}; known: {', '.join(sorted(SERVICE_VIEWS))}"
        )
    excluded = _EXCLUDE.get(service, set())
    return [n for v in SERVICE_VIEWS[service] for n in view_features(v) if n not in excluded]
