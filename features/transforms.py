"""Pure transforms from raw tables to per-cutoff feature tables.

Every feature at cutoff T is computed from events dated strictly before T (weekly usage only
from weeks complete before T) and from static attributes; snapshot columns that describe the
present (customers.status, churn_date, plan_tier; leads.status) are never read, so history
can't leak into the past. Each table has one row per entity per monthly cutoff, stamped with
the cutoff as `event_timestamp`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from features.columns import VIEW_COLUMNS, view_features

TIER_RANK = {"basic": 0, "pro": 1, "business": 2}
SIZE_RANK = {"small": 0, "mid": 1, "large": 2}
INDUSTRIES = ("software", "retail", "finance", "healthcare", "manufacturing")
SOURCES = ("organic", "paid_search", "webinar", "partner", "referral")
MAX_TIER = max(TIER_RANK.values())
NO_EVENT_DAYS = 9999.0  # "days since" when the event never happened
AGED_AFTER = pd.DateOffset(months=12)

DAY = np.timedelta64(1, "D")


class _Window:
    """Rows of a table sorted by one date column, sliced by date ranges in O(log n)."""

    def __init__(self, frame: pd.DataFrame, date: str) -> None:
        self.frame = frame.sort_values(date, kind="stable").reset_index(drop=True)
        self.dates = self.frame[date].to_numpy("datetime64[ns]")

    def between(self, start: pd.Timestamp | None, end: pd.Timestamp) -> pd.DataFrame:
        lo = 0 if start is None else int(np.searchsorted(self.dates, start.to_datetime64()))
        hi = int(np.searchsorted(self.dates, end.to_datetime64()))
        return self.frame.iloc[lo:hi]


def _days(delta: pd.Series | np.ndarray) -> np.ndarray:
    return (np.asarray(delta, dtype="timedelta64[ns]") / DAY).astype(float)


def _codes(frame: pd.DataFrame, key: str, index: pd.Index) -> np.ndarray | None:
    """Category codes of `frame[key]` when it shares categories with `index`, else None."""
    column = frame[key]
    if isinstance(index, pd.CategoricalIndex) and isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy()
    return None


def _count(frame: pd.DataFrame, key: str, index: pd.Index) -> np.ndarray:
    """Rows per id of `index` (0 when none)."""
    codes = _codes(frame, key, index)
    if codes is not None:
        assert isinstance(index, pd.CategoricalIndex)
        return np.bincount(codes, minlength=len(index.categories))[index.codes].astype(np.int64)
    counts = frame.groupby(key, observed=True, sort=False).size()
    return _align(counts, index, 0).to_numpy(np.int64)


def _sum(frame: pd.DataFrame, key: str, column: str, index: pd.Index) -> np.ndarray:
    """Sum of `column` per id of `index` (0 when none)."""
    codes = _codes(frame, key, index)
    if codes is not None:
        assert isinstance(index, pd.CategoricalIndex)
        weights = frame[column].to_numpy(float)
        totals = np.bincount(codes, weights=weights, minlength=len(index.categories))
        return totals[index.codes]
    grouped = frame.groupby(key, observed=True, sort=False)[column].sum()
    return _align(grouped, index, 0).to_numpy(float)


def _align(series: pd.Series, index: pd.Index, fill: object = None) -> pd.Series:
    """Reindex a per-id result to `index`. When both are categorical over the shared id
    categories, map codes through a dense array instead of hashing strings again."""
    if isinstance(index, pd.CategoricalIndex) and isinstance(series.index, pd.CategoricalIndex):
        values = series.to_numpy()
        if values.dtype.kind == "M":
            dense = np.full(len(index.categories), np.datetime64("NaT"), dtype=values.dtype)
        else:
            dense = np.full(len(index.categories), np.nan if fill is None else fill, dtype=float)
        dense[series.index.codes] = values
        return pd.Series(dense[index.codes], index=index)
    if isinstance(series.index, pd.CategoricalIndex):
        series.index = series.index.astype(object)
    return series.reindex(index) if fill is None else series.reindex(index, fill_value=fill)


def _days_since(
    frame: pd.DataFrame, key: str, date: str, cutoff: pd.Timestamp, index: pd.Index
) -> np.ndarray:
    """Days from each id's latest `date` to the cutoff (NO_EVENT_DAYS when it has none)."""
    codes = _codes(frame, key, index)
    if codes is not None:
        assert isinstance(index, pd.CategoricalIndex)
        latest = np.full(len(index.categories), np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(latest, codes, frame[date].to_numpy("datetime64[ns]").view(np.int64))
        picked = latest[index.codes]
        days = (cutoff.to_datetime64().astype("datetime64[ns]").view(np.int64) - picked) / 864e11
        return np.where(picked == np.iinfo(np.int64).min, NO_EVENT_DAYS, days)
    last = _align(frame.groupby(key, observed=True, sort=False)[date].max(), index)
    return np.nan_to_num(_days(cutoff - last), nan=NO_EVENT_DAYS)


def _add_months(dates: np.ndarray, months: np.ndarray) -> np.ndarray:
    """Calendar month arithmetic on datetime64 arrays (day clipped to the month's end)."""
    start = dates.astype("datetime64[M]")
    day = (dates.astype("datetime64[D]") - start.astype("datetime64[D]")).astype(np.int64)
    target = start + months.astype("timedelta64[M]")
    length = ((target + 1).astype("datetime64[D]") - target.astype("datetime64[D]")).astype(int)
    return (target.astype("datetime64[D]") + np.minimum(day, length - 1)).astype("datetime64[ns]")


def _next_anniversary(starts: np.ndarray, cutoff: pd.Timestamp) -> pd.Series:
    """First anniversary of each start date on or after the cutoff."""
    start_month = starts.astype("datetime64[M]").astype(np.int64)
    cutoff_month = np.datetime64(cutoff, "M").astype(np.int64)
    years = (cutoff_month - start_month) // 12
    candidate = _add_months(starts, years * 12)
    late = candidate < cutoff.to_datetime64()
    candidate[late] = _add_months(starts[late], (years[late] + 1) * 12)
    return pd.Series(candidate)


def _stamp(cutoff: pd.Timestamp) -> pd.Timestamp:
    """Feast event timestamps are UTC."""
    stamp = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    return stamp.as_unit("ns")


def monthly_cutoffs(first: pd.Timestamp, last: pd.Timestamp) -> list[pd.Timestamp]:
    """Month starts strictly after `first` up to and including `last`."""
    start = (first + pd.offsets.MonthBegin(1)).normalize()
    return list(pd.date_range(start, last, freq="MS"))


def lifecycle_state(events: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Per customer as of a cutoff: status, start of the current spell, last lapse, and the
    months spent as a customer before it (from lifecycle events dated before the cutoff)."""
    before = events[events["event_date"] < cutoff].sort_values(
        ["customer_id", "event_date"], kind="stable"
    )
    grouped = before.groupby("customer_id", sort=True)
    last = grouped.last()
    starts = before[before["event"] != "churn"].groupby("customer_id")["event_date"].max()
    lapses = before[before["event"] == "churn"].groupby("customer_id")["event_date"].max()
    first_signup = before[before["event"] == "signup"].groupby("customer_id")["event_date"].min()
    state = pd.DataFrame(
        {
            "active": last["event"].isin(["signup", "return"]),
            "spell_start": starts.reindex(last.index),
            "last_lapse": lapses.reindex(last.index),
            "first_signup": first_signup.reindex(last.index),
        }
    )
    # Time as a customer: sum of closed spells plus the open one.
    ordered = before.assign(start=before["event_date"].where(before["event"] != "churn"))
    ordered["start"] = ordered.groupby("customer_id")["start"].ffill()
    closed = ordered[ordered["event"] == "churn"]
    served = _days(closed["event_date"] - closed["start"])
    prior = pd.Series(served, index=closed["customer_id"]).groupby(level=0).sum()
    state["days_served_before_spell"] = prior.reindex(state.index, fill_value=0.0)
    return state


def _tier_at(customers: pd.DataFrame, changes: pd.DataFrame, cutoff: pd.Timestamp) -> pd.Series:
    """Plan tier rank per customer as of a cutoff: the signup tier plus later changes."""
    tier = customers.set_index("customer_id")["signup_plan_tier"].map(TIER_RANK)
    moved = changes[changes["change_date"] < cutoff]
    latest = (
        moved.sort_values("change_date", kind="stable").groupby("customer_id")["to_tier"].last()
    )
    tier.loc[latest.index] = latest.map(TIER_RANK).to_numpy()
    return tier.astype(np.int64)


def _code(values: pd.Series, levels: tuple[str, ...]) -> np.ndarray:
    """Position of each value in `levels` (len(levels) for anything else)."""
    lookup = {level: i for i, level in enumerate(levels)}
    return values.map(lookup).fillna(len(levels)).to_numpy(np.int64)


def _table(view: str, out: dict, cutoff: pd.Timestamp) -> pd.DataFrame:
    """The view's key, `event_timestamp` and features, in the order of its Feast schema."""
    key = VIEW_COLUMNS[view][0]
    frame = pd.DataFrame({key: out[key]})
    frame["event_timestamp"] = _stamp(cutoff)
    for name in view_features(view):
        frame[name] = out[name]
    return frame


_SMALL_CATEGORIES = {
    "orders": ("product_id", "order_type"),
    "support_tickets": ("severity",),
    "marketing_touches": ("entity_kind", "campaign", "channel"),
    "marketing_responses": ("response",),
}
_ID_COLUMNS = {
    "orders": "customer_id",
    "usage_weekly": "customer_id",
    "support_tickets": "customer_id",
    "nps_surveys": "customer_id",
    "referrals": "referrer_customer_id",
    "marketing_touches": "entity_id",
    "web_visits": "lead_id",
}


def _categorical(
    raw: dict[str, pd.DataFrame],
) -> tuple[dict[str, pd.DataFrame], pd.CategoricalDtype]:
    """Copies of the event tables with ids and labels as categoricals: grouping and comparing
    integer codes is an order of magnitude faster than Python strings."""
    ids = pd.Index(raw["customers"]["customer_id"]).append(pd.Index(raw["leads"]["lead_id"]))
    id_type = pd.CategoricalDtype(ids.unique())
    out = dict(raw)
    for name, column in _ID_COLUMNS.items():
        out[name] = out[name].assign(**{column: out[name][column].astype(id_type)})
    for name, columns in _SMALL_CATEGORIES.items():
        out[name] = out[name].assign(**{c: out[name][c].astype("category") for c in columns})
    return out, id_type


class FeatureBuilder:
    """Computes feature tables for any cutoffs from one set of validated raw tables."""

    def __init__(self, raw: dict[str, pd.DataFrame]) -> None:
        raw, self.id_type = _categorical(raw)
        self.raw = raw
        self.customers = raw["customers"].set_index("customer_id", drop=False)
        products = raw["products"].set_index("product_id")
        self.product_kind = products["kind"]
        self.product_price = products["price"]
        self.plan_price = {
            TIER_RANK[t]: float(p)
            for t, p in products.loc[products["kind"] == "plan", ["tier", "price"]].to_numpy()
        }
        orders = raw["orders"].assign(kind=raw["orders"]["product_id"].map(self.product_kind))
        self.orders = _Window(orders, "order_date")
        self.usage = _Window(raw["usage_weekly"], "week_start")
        self.tickets = _Window(raw["support_tickets"], "opened_at")
        self.nps = _Window(raw["nps_surveys"], "survey_date")
        self.referrals = _Window(raw["referrals"], "referral_date")
        touches = raw["marketing_touches"]
        responses = raw["marketing_responses"].merge(
            touches[["touch_id", "entity_kind", "entity_id", "campaign"]], on="touch_id"
        )
        self.touches = _Window(touches, "touch_date")
        self.visits = _Window(raw["web_visits"], "visit_date")
        self.responses = _Window(responses, "response_date")
        self.changes = raw["plan_changes"]
        self.events = raw["lifecycle_events"]
        self.leads = raw["leads"]
        self._state: dict[pd.Timestamp, pd.DataFrame] = {}

    def state(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        """Lifecycle state at a cutoff (cached: customer and former views share it)."""
        if cutoff not in self._state:
            self._state = {cutoff: lifecycle_state(self.events, cutoff)}
        return self._state[cutoff]

    # ---- customers -------------------------------------------------------------------------
    def customer_features(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        """Features of the customers active at `cutoff` (churn, expansion, referral, clv)."""
        state = self.state(cutoff)
        state = state[state["active"]]
        ids = pd.CategoricalIndex(state.index, dtype=self.id_type)
        static = self.customers.loc[state.index]
        out: dict[str, np.ndarray | pd.Series] = {"customer_id": ids.to_numpy(object)}

        tenure = _days(cutoff - state["spell_start"])
        out["tenure_days"] = tenure
        out["returned_customer"] = (state["first_signup"] < state["spell_start"]).to_numpy(np.int64)
        annual = (static["contract"] == "annual").to_numpy()
        out["annual_contract"] = annual.astype(np.int64)
        spell_start = state["spell_start"]
        out["days_to_renewal"] = _days(_next_anniversary(spell_start.to_numpy(), cutoff) - cutoff)
        out["month_of_year"] = np.full(len(ids), cutoff.month, np.int64)

        tier = _tier_at(self.customers, self.changes, cutoff)
        tier = tier.reindex(state.index).to_numpy(np.int64)
        out["plan_tier_rank"] = tier
        out["upsell_headroom"] = MAX_TIER - tier
        spell = pd.Series(spell_start.to_numpy(), index=ids)
        all_orders = self.orders.between(None, cutoff)
        all_orders = all_orders[all_orders["customer_id"].isin(ids)]
        in_spell = all_orders["order_date"].to_numpy() >= all_orders["customer_id"].map(
            spell
        ).to_numpy("datetime64[ns]")
        spell_orders = all_orders[in_spell]
        out["order_days_lifetime"] = _count(
            spell_orders.drop_duplicates(["customer_id", "order_date"]), "customer_id", ids
        )
        add_on_buys = all_orders[
            in_spell & (all_orders["kind"] == "add_on") & (all_orders["order_type"] == "new")
        ]
        held = _align(
            add_on_buys.groupby("customer_id", observed=True, sort=False)["product_id"].nunique(),
            ids,
        )
        held = held.fillna(0).to_numpy(np.int64)
        n_add_ons = int((self.product_kind == "add_on").sum())
        out["add_ons_available"] = n_add_ons - held
        add_on_value = (
            add_on_buys.drop_duplicates(["customer_id", "product_id"])
            .assign(price=lambda f: f["product_id"].map(self.product_price).astype(float))
            .groupby("customer_id", observed=True, sort=False)["price"]
            .sum()
            .pipe(_align, ids, 0.0)
            .to_numpy(float)
        )
        out["monthly_recurring_revenue"] = np.vectorize(self.plan_price.get)(tier) + add_on_value

        # Invoices fall on the 1st, so windows are calendar months (about 30/90/365 days).
        for months in (1, 3, 12):
            window = all_orders[all_orders["order_date"] >= cutoff - pd.DateOffset(months=months)]
            out[f"orders_{months}m"] = _count(window, "customer_id", ids)
            out[f"revenue_{months}m"] = _sum(window, "customer_id", "amount", ids)
        out["days_since_last_order"] = _days_since(
            all_orders, "customer_id", "order_date", cutoff, ids
        )
        year = all_orders[all_orders["order_date"] >= cutoff - pd.DateOffset(months=12)]
        services = year[year["kind"] == "service"]
        out["services_revenue_12m"] = _sum(services, "customer_id", "amount", ids)
        out["lifetime_revenue"] = _sum(all_orders, "customer_id", "amount", ids)
        purchases = all_orders[all_orders["order_type"] == "new"]
        out["days_since_last_purchase"] = _days_since(
            purchases, "customer_id", "order_date", cutoff, ids
        )

        moved = self.changes[
            (self.changes["change_date"] < cutoff) & self.changes["customer_id"].isin(state.index)
        ]
        moved = moved.assign(customer_id=moved["customer_id"].astype(self.id_type))
        out["signup_plan_tier_rank"] = static["signup_plan_tier"].map(TIER_RANK).to_numpy(np.int64)
        out["upgrades_total"] = _count(moved[moved["direction"] == "upgrade"], "customer_id", ids)
        out["downgrades_total"] = _count(
            moved[moved["direction"] == "downgrade"], "customer_id", ids
        )
        out["services_orders_total"] = _count(
            all_orders[(all_orders["kind"] == "service") & (all_orders["order_type"] == "new")],
            "customer_id",
            ids,
        )
        # Past purchase rates: the account's own history of buying add-ons (in this spell).
        years = np.maximum(tenure, 30.0) / 365.25
        out["add_ons_bought_per_year"] = held / years

        seats = static["seats"].to_numpy(float)
        out["seats"] = static["seats"].to_numpy(np.int64)
        out["company_size_rank"] = static["company_size"].map(SIZE_RANK).to_numpy(np.int64)
        out["industry_code"] = _code(static["industry"], INDUSTRIES)
        out["source_code"] = _code(static["acquisition_source"], SOURCES)

        out.update(self._usage(cutoff, ids, seats))
        out.update(self._email(cutoff, ids, "customer"))
        out.update(self._support(cutoff, ids))
        out.update(self._nps(cutoff, ids))
        refs = self.referrals.between(None, cutoff)
        recent = refs[refs["referral_date"] >= cutoff - pd.Timedelta(days=365)]
        out["referrals_365d"] = _count(recent, "referrer_customer_id", ids)
        out["referrals_total"] = _count(refs, "referrer_customer_id", ids)
        out["referrals_per_year"] = out["referrals_total"] / years
        out["days_since_last_referral"] = _days_since(
            refs, "referrer_customer_id", "referral_date", cutoff, ids
        )
        return _table("customer_features", out, cutoff)

    def _usage(self, cutoff: pd.Timestamp, ids: pd.Index, seats: np.ndarray) -> dict:
        # Only weeks complete before the cutoff.
        weeks = self.usage.between(cutoff - pd.Timedelta(days=370), cutoff - pd.Timedelta(days=6))
        age = _days(cutoff - weeks["week_start"])
        last4 = weeks[age <= 34]
        last12 = weeks[age <= 90]
        rates = {}
        # Ratios over all weeks observed in the window (a new account has fewer than 12 or 52):
        # per-user rates and seat shares separate how engaged, healthy and vocal an account is
        # from how big it is, and the year-long window estimates the account's usual level.
        for label, window in (("12w", last12), ("52w", weeks)):
            users = _sum(window, "customer_id", "active_users", ids)
            observed = _count(window, "customer_id", ids)
            with np.errstate(divide="ignore", invalid="ignore"):
                per_user = np.where(users > 0, 1.0 / users, np.nan)
                rates[f"sessions_per_user_{label}"] = (
                    _sum(window, "customer_id", "sessions", ids) * per_user
                )
                rates[f"invites_per_user_{label}"] = (
                    _sum(window, "customer_id", "invites_sent", ids) * per_user
                )
                rates[f"upgrade_prompts_per_user_{label}"] = (
                    _sum(window, "customer_id", "upgrade_prompts", ids) * per_user
                )
                rates[f"seat_utilization_{label}"] = np.where(
                    observed > 0, users / (observed * np.maximum(seats, 1.0)), np.nan
                )
                if label == "52w":
                    rates["invites_per_week_52w"] = np.where(
                        observed > 0,
                        _sum(window, "customer_id", "invites_sent", ids) / observed,
                        np.nan,
                    )
        sessions4 = _sum(last4, "customer_id", "sessions", ids) / 4.0
        sessions12 = _sum(last12, "customer_id", "sessions", ids) / 12.0
        users4 = _sum(last4, "customer_id", "active_users", ids) / 4.0
        users12 = _sum(last12, "customer_id", "active_users", ids) / 12.0
        invites4 = _sum(last4, "customer_id", "invites_sent", ids) / 4.0
        invites12 = _sum(last12, "customer_id", "invites_sent", ids) / 12.0
        with np.errstate(divide="ignore", invalid="ignore"):
            trend = np.where(sessions12 > 0, sessions4 / sessions12, np.nan)
            users_trend = np.where(users12 > 0, users4 / users12, np.nan)
        return {
            "sessions_per_week_4w": sessions4,
            "sessions_per_week_12w": sessions12,
            "active_users_4w": users4,
            "seat_utilization_4w": users4 / np.maximum(seats, 1.0),
            "usage_trend_4v12": trend,
            "active_users_trend_4v12": users_trend,
            "usage_decline_pct": np.clip(100.0 * (1.0 - np.nan_to_num(trend, nan=1.0)), 0, 100),
            "weeks_active_12w": _count(last12[last12["sessions"] > 0], "customer_id", ids),
            "invites_per_week_4w": invites4,
            "invites_per_week_12w": invites12,
            "upgrade_prompts_per_week_4w": _sum(last4, "customer_id", "upgrade_prompts", ids) / 4.0,
            **rates,
        }

    def _email(self, cutoff: pd.Timestamp, ids: pd.Index, kind: str, prefix: str = "") -> dict:
        touches = self.touches.between(cutoff - pd.Timedelta(days=365), cutoff)
        touches = touches[touches["entity_kind"] == kind]
        responses = self.responses.between(None, cutoff)
        responses = responses[responses["entity_kind"] == kind]
        out = {}
        for days in (90, 365):
            sent = touches[touches["touch_date"] >= cutoff - pd.Timedelta(days=days)]
            answered = responses[responses["response_date"] >= cutoff - pd.Timedelta(days=days)]
            n_sent = _count(sent, "entity_id", ids)
            opens = _count(answered[answered["response"] == "open"], "entity_id", ids)
            clicks = _count(answered[answered["response"] == "click"], "entity_id", ids)
            out[f"{prefix}emails_{days}d"] = n_sent
            out[f"{prefix}email_opens_{days}d"] = opens
            out[f"{prefix}email_clicks_{days}d"] = clicks
            with np.errstate(divide="ignore", invalid="ignore"):
                out[f"{prefix}email_open_rate_{days}d"] = np.where(
                    n_sent > 0, opens / n_sent, np.nan
                )
        engaged = responses[responses["response"].isin(["open", "click"])]
        out[f"{prefix}days_since_last_engagement"] = _days_since(
            engaged, "entity_id", "response_date", cutoff, ids
        )
        return out

    def _support(self, cutoff: pd.Timestamp, ids: pd.Index) -> dict:
        year = self.tickets.between(cutoff - pd.Timedelta(days=365), cutoff)
        quarter = year[year["opened_at"] >= cutoff - pd.Timedelta(days=90)]
        severe = quarter[quarter["severity"].isin(["high", "critical"])]
        hours = _align(
            quarter.groupby("customer_id", observed=True, sort=False)["resolution_hours"].mean(),
            ids,
        )
        return {
            "tickets_90d": _count(quarter, "customer_id", ids),
            "tickets_365d": _count(year, "customer_id", ids),
            "severe_tickets_90d": _count(severe, "customer_id", ids),
            "mean_resolution_hours_90d": hours.to_numpy(float),
        }

    def _nps(self, cutoff: pd.Timestamp, ids: pd.Index) -> dict:
        answers = self.nps.between(None, cutoff)
        answers = answers[answers["customer_id"].isin(ids)]
        ordered = answers.sort_values(["customer_id", "survey_date"], kind="stable")
        grouped = ordered.groupby("customer_id", observed=True, sort=False)["score"]
        last = _align(grouped.last(), ids)
        previous = grouped.nth(-2)
        owners = ordered.loc[previous.index, "customer_id"].astype(object).to_numpy()
        previous = pd.Series(previous.to_numpy(), index=owners).reindex(ids)
        year = answers[answers["survey_date"] >= cutoff - pd.Timedelta(days=365)]
        answered = _count(year, "customer_id", ids)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(
                answered > 0, _sum(year, "customer_id", "score", ids) / answered, np.nan
            )
        return {
            "nps_last": last.to_numpy(float),
            "nps_change": (last - previous).to_numpy(float),
            "days_since_nps": _days_since(answers, "customer_id", "survey_date", cutoff, ids),
            "nps_mean_365d": mean,
            "nps_answers_365d": answered,
        }

    # ---- former customers --------------------------------------------------------------------
    def former_customer_features(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        """Features of customers lapsed before `cutoff` (win-back side of reactivation)."""
        state = self.state(cutoff)
        state = state[~state["active"]]
        ids = pd.CategoricalIndex(state.index, dtype=self.id_type)
        static = self.customers.loc[state.index]
        lapse = state["last_lapse"]
        spell_days = _days(lapse - state["spell_start"])
        orders = self.orders.between(None, cutoff)
        orders = orders[orders["customer_id"].isin(ids)]
        last_quarter = orders[
            orders["order_date"].to_numpy()
            >= (orders["customer_id"].map(lapse) - pd.Timedelta(days=90)).to_numpy()
        ]
        tier = _tier_at(self.customers, self.changes, cutoff)
        tier = tier.reindex(state.index).to_numpy(np.int64)
        touches = self.touches.between(None, cutoff)
        winback = touches[
            (touches["entity_kind"] == "customer") & (touches["campaign"] == "winback")
        ]
        out: dict[str, np.ndarray] = {
            "customer_id": ids.to_numpy(object),
            "former_months_since_lapse": _days(cutoff - lapse) / 30.44,
            "former_prior_tenure_months": (spell_days + state["days_served_before_spell"]) / 30.44,
            "former_prior_spend": _sum(orders, "customer_id", "amount", ids),
            "former_monthly_revenue_before_lapse": _sum(last_quarter, "customer_id", "amount", ids)
            / 3.0,
            "former_plan_tier_rank": tier,
            "former_company_size_rank": static["company_size"].map(SIZE_RANK).to_numpy(np.int64),
            "former_seats": static["seats"].to_numpy(np.int64),
            "former_winback_touches": _count(winback, "entity_id", ids),
            "former_times_lapsed": _count(
                self.events[
                    (self.events["event"] == "churn") & (self.events["event_date"] < cutoff)
                ],
                "customer_id",
                ids,
            ),
        }
        nps = self._nps(cutoff, ids)
        out["former_nps_last"] = nps["nps_last"]
        support = self.tickets.between(None, cutoff)
        support = support[support["customer_id"].isin(ids)]
        late = support[
            support["opened_at"].to_numpy()
            >= (support["customer_id"].map(lapse) - pd.Timedelta(days=90)).to_numpy()
        ]
        out["former_tickets_before_lapse"] = _count(late, "customer_id", ids)
        usage = self.usage.between(None, cutoff)
        usage = usage[usage["customer_id"].isin(ids)]
        tail = usage[
            usage["week_start"].to_numpy()
            >= (usage["customer_id"].map(lapse) - pd.Timedelta(days=56)).to_numpy()
        ]
        out["former_sessions_per_week_before_lapse"] = (
            _sum(tail, "customer_id", "sessions", ids) / 8.0
        )
        # The account's health and budget as it left: seat use and limits met before lapse.
        users = _sum(tail, "customer_id", "active_users", ids)
        weeks = _count(tail, "customer_id", ids)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["former_seat_utilization_before_lapse"] = np.where(
                weeks > 0,
                users / (weeks * np.maximum(static["seats"].to_numpy(float), 1.0)),
                np.nan,
            )
            out["former_upgrade_prompts_per_user_before_lapse"] = np.where(
                users > 0, _sum(tail, "customer_id", "upgrade_prompts", ids) / users, np.nan
            )
        out.update(self._email(cutoff, ids, "customer", prefix="former_"))
        return _table("former_customer_features", out, cutoff)

    # ---- leads -------------------------------------------------------------------------------
    def lead_features(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        """Features of the aged leads (12 months or more without a purchase) at `cutoff`."""
        leads = self.leads
        converted = leads["converted_at"] < cutoff
        aged = leads[(leads["created_at"] < cutoff - AGED_AFTER) & ~converted]
        ids = pd.CategoricalIndex(aged["lead_id"], dtype=self.id_type)
        touches = self.touches.between(None, cutoff)
        touches = touches[touches["entity_kind"] == "lead"]
        reactivation = touches[touches["campaign"] == "reactivation"]
        out: dict[str, np.ndarray] = {
            "lead_id": ids.to_numpy(object),
            "lead_age_days": _days(cutoff - aged["created_at"]),
            "lead_company_size_rank": aged["company_size"].map(SIZE_RANK).to_numpy(np.int64),
            "lead_employees": aged["employees"].to_numpy(np.int64),
            "lead_fit_score": aged["lead_score"].to_numpy(np.int64),
            "lead_reactivation_touches": _count(reactivation, "entity_id", ids),
        }
        out["lead_source_code"] = _code(aged["source"], SOURCES)
        out["lead_industry_code"] = _code(aged["industry"], INDUSTRIES)
        responses = self.responses.between(None, cutoff)
        responses = responses[(responses["entity_kind"] == "lead")]
        out["lead_opens_total"] = _count(
            responses[responses["response"] == "open"], "entity_id", ids
        )
        out["lead_clicks_total"] = _count(
            responses[responses["response"] == "click"], "entity_id", ids
        )
        out.update(self._email(cutoff, ids, "lead", prefix="lead_"))
        visits = self.visits.between(cutoff - pd.Timedelta(days=365), cutoff)
        for days in (30, 90, 365):
            recent = visits[visits["visit_date"] >= cutoff - pd.Timedelta(days=days)]
            out[f"lead_web_visits_{days}d"] = _count(recent, "lead_id", ids)
        out["lead_days_since_last_visit"] = _days_since(
            self.visits.between(None, cutoff), "lead_id", "visit_date", cutoff, ids
        )
        return _table("lead_features", out, cutoff)


def directories(raw: dict[str, pd.DataFrame], as_of: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """Every customer and lead id known at `as_of`, with its status then."""
    state = lifecycle_state(raw["lifecycle_events"], as_of)
    customers = pd.DataFrame(
        {
            "customer_id": state.index.to_numpy(object),
            "event_timestamp": _stamp(as_of),
            "customer_status": np.where(state["active"], 1, 2).astype(np.int64),
        }
    )
    leads = raw["leads"]
    known = leads[leads["created_at"] < as_of]
    converted = (known["converted_at"] < as_of).to_numpy()
    aged = (known["created_at"] < as_of - AGED_AFTER).to_numpy()
    leads_frame = pd.DataFrame(
        {
            "lead_id": known["lead_id"].to_numpy(object),
            "event_timestamp": _stamp(as_of),
            "lead_status": np.where(converted, 3, np.where(aged, 2, 1)).astype(np.int64),
        }
    )
    return {"customer_directory": customers, "lead_directory": leads_frame}


VIEWS = {
    "customer_features": FeatureBuilder.customer_features,
    "former_customer_features": FeatureBuilder.former_customer_features,
    "lead_features": FeatureBuilder.lead_features,
}


def build_feature_tables(
    raw: dict[str, pd.DataFrame], cutoffs: Iterable[pd.Timestamp]
) -> dict[str, dict[pd.Timestamp, pd.DataFrame]]:
    """Per feature view, the feature table of each cutoff."""
    builder = FeatureBuilder(raw)
    tables: dict[str, dict[pd.Timestamp, pd.DataFrame]] = {view: {} for view in VIEWS}
    for cutoff in cutoffs:  # cutoff-major, so the lifecycle state is computed once per cutoff
        for view, method in VIEWS.items():
            tables[view][cutoff] = method(builder, cutoff)
    return tables
