"""Label builders: pure functions of the raw tables, looking only at events after a cutoff.

Each returns one row per entity and cutoff with the keys (`customer_id`, or `lead_id` and
`customer_id` for dormant contacts), `cutoff`, `label`, and any breakdown columns. Events on
the cutoff day belong to the future, as in the features (which use events before it).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from features.transforms import lifecycle_state

RawTables = dict[str, pd.DataFrame]
REACTIVATION_DAYS = 60


def active_customers(raw: RawTables, cutoffs: list[pd.Timestamp]) -> pd.DataFrame:
    """Customers active at each cutoff: the population of the customer models."""
    frames = []
    for cutoff in cutoffs:
        state = lifecycle_state(raw["lifecycle_events"], cutoff)
        ids = state.index[state["active"].to_numpy()]
        frames.append(pd.DataFrame({"customer_id": ids.to_numpy(object), "cutoff": cutoff}))
    return pd.concat(frames, ignore_index=True) if frames else _empty(["customer_id", "cutoff"])


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def _in_window(
    population: pd.DataFrame, events: pd.DataFrame, key: str, date: str, months: int
) -> np.ndarray:
    """Whether each (id, cutoff) row has an event in [cutoff, cutoff + months)."""
    joined = (
        population[["customer_id", "cutoff"]]
        .reset_index()
        .merge(events[[key, date]].rename(columns={key: "customer_id"}), on="customer_id")
    )
    end = joined["cutoff"] + pd.DateOffset(months=months)
    hit = joined[(joined[date] >= joined["cutoff"]) & (joined[date] < end)]["index"].unique()
    flags = np.zeros(len(population), dtype=bool)
    flags[hit] = True
    return flags


def churn(raw: RawTables, population: pd.DataFrame, months: int) -> pd.DataFrame:
    """1 when the customer lapses within `months` of the cutoff."""
    events = raw["lifecycle_events"]
    lapses = events[events["event"] == "churn"]
    label = _in_window(population, lapses, "customer_id", "event_date", months)
    return population.assign(label=label.astype(float))


def expansion(raw: RawTables, population: pd.DataFrame, months: int) -> pd.DataFrame:
    """1 when the customer buys a new add-on (cross-sell) or upgrades (upsell) in the window."""
    kinds = raw["products"].set_index("product_id")["kind"]
    orders = raw["orders"]
    add_ons = orders[
        (orders["order_type"] == "new") & (orders["product_id"].map(kinds) == "add_on")
    ]
    changes = raw["plan_changes"]
    upgrades = changes[changes["direction"] == "upgrade"]
    cross = _in_window(population, add_ons, "customer_id", "order_date", months)
    up = _in_window(population, upgrades, "customer_id", "change_date", months)
    return population.assign(
        label=(cross | up).astype(float), cross_sell=cross.astype(float), upsell=up.astype(float)
    )


def referral(raw: RawTables, population: pd.DataFrame, months: int) -> pd.DataFrame:
    """1 when the customer refers a new lead in the window."""
    label = _in_window(
        population, raw["referrals"], "referrer_customer_id", "referral_date", months
    )
    return population.assign(label=label.astype(float))


def clv(raw: RawTables, population: pd.DataFrame, months: int) -> pd.DataFrame:
    """Revenue (sum of order amounts) in the `months` from the cutoff."""
    joined = (
        population[["customer_id", "cutoff"]]
        .reset_index()
        .merge(raw["orders"][["customer_id", "order_date", "amount"]], on="customer_id")
    )
    end = joined["cutoff"] + pd.DateOffset(months=months)
    inside = joined[(joined["order_date"] >= joined["cutoff"]) & (joined["order_date"] < end)]
    revenue = inside.groupby("index")["amount"].sum().reindex(range(len(population)), fill_value=0)
    return population.assign(label=revenue.to_numpy(float))


def dormant_touched(raw: RawTables, cutoffs: list[pd.Timestamp]) -> pd.DataFrame:
    """Aged leads and former customers contacted by reactivation or win-back outreach, one row
    per touch, at the cutoff that starts the touch's month."""
    touches = raw["marketing_touches"]
    sent = touches[touches["campaign"].isin(["reactivation", "winback"])].copy()
    sent["cutoff"] = sent["touch_date"].dt.to_period("M").dt.to_timestamp()
    sent = sent[sent["cutoff"].isin(cutoffs)]
    is_lead = (sent["entity_kind"] == "lead").to_numpy()
    return pd.DataFrame(
        {
            "lead_id": np.where(is_lead, sent["entity_id"], ""),
            "customer_id": np.where(is_lead, "", sent["entity_id"]),
            "cutoff": sent["cutoff"].to_numpy(),
            "touch_id": sent["touch_id"].to_numpy(),
            "touch_date": sent["touch_date"].to_numpy(),
            "kind": np.where(is_lead, "lead", "former_customer"),
        }
    ).reset_index(drop=True)


def reactivation(raw: RawTables, population: pd.DataFrame, months: int) -> pd.DataFrame:
    """1 when the touched contact converts (or returns) within 60 days of the touch."""
    responses = raw["marketing_responses"]
    converts = responses[responses["response"] == "convert"]
    joined = population[["touch_id", "touch_date"]].merge(converts, on="touch_id", how="left")
    within = (joined["response_date"] - joined["touch_date"]) <= pd.Timedelta(
        days=REACTIVATION_DAYS
    )
    label = within.groupby(joined["touch_id"], sort=False).any().reindex(population["touch_id"])
    out = population.assign(label=label.to_numpy(float))
    for kind in ("lead", "former_customer"):
        out[kind] = (out["kind"] == kind).astype(float)
    return out


LABELS: dict[str, Callable[[RawTables, pd.DataFrame, int], pd.DataFrame]] = {
    "churn": churn,
    "expansion": expansion,
    "referral": referral,
    "clv": clv,
    "reactivation": reactivation,
}
POPULATIONS: dict[str, Callable[[RawTables, list[pd.Timestamp]], pd.DataFrame]] = {
    "active_customers": active_customers,
    "dormant_touched": dormant_touched,
}


def table_labels(path: str, cutoffs: list[pd.Timestamp]) -> pd.DataFrame:
    """A user's own label table: entity key column(s), `cutoff`, `label`."""
    frame = pd.read_parquet(path)
    for column in ("cutoff", "label"):
        if column not in frame.columns:
            raise ValueError(f"label table {path}: column {column} is missing")
    frame["cutoff"] = pd.to_datetime(frame["cutoff"])
    return frame[frame["cutoff"].isin(cutoffs)].reset_index(drop=True)
