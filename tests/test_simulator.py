"""The TechFlow simulator: calibration, determinism, schema, integrity, truth, advancing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.raw_schema import RAW_SCHEMA, kind_of
from simulator.io import advance_world, as_of, read_tables, write_world
from simulator.summary import TARGETS, active_at, deviations, summarize
from simulator.world import START, simulate


def test_marginal_rates_meet_the_chapter_figures(rate_world):
    summary = summarize(rate_world.raw, as_of(rate_world.months))
    report = deviations(summary, rate_world.scale)
    off = {k: v for k, v in report.items() if not v[3]}
    assert not off, f"outside tolerance (measured, target, tol, ok): {off}"
    assert set(report) == set(TARGETS)


def test_same_seed_gives_the_same_bytes(tmp_path: Path, small_world):
    again = simulate(months=36, scale=small_world.scale, seed=small_world.seed)
    write_world(small_world, tmp_path / "a" / "raw", tmp_path / "a" / "truth")
    write_world(again, tmp_path / "b" / "raw", tmp_path / "b" / "truth")

    def digest(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}

    for sub in ("raw", "truth"):
        assert digest(tmp_path / "a" / sub) == digest(tmp_path / "b" / sub)
    other = simulate(months=36, scale=small_world.scale, seed=small_world.seed + 1)
    assert not other.raw["orders"].equals(small_world.raw["orders"])


def test_every_table_matches_the_raw_schema(small_world):
    assert set(small_world.raw) == set(RAW_SCHEMA)
    for name, table in RAW_SCHEMA.items():
        frame = small_world.raw[name]
        assert list(frame.columns) == list(table.columns), name
        assert len(frame) > 0, name
        for column, spec in table.columns.items():
            assert kind_of(frame[column]) == spec.kind, (name, column)
            if not spec.nullable:
                assert frame[column].notna().all(), (name, column)
            if spec.allowed:
                assert set(frame[column].dropna()) <= set(spec.allowed), (name, column)
        if table.key:
            assert not frame.duplicated(list(table.key)).any(), name
        if table.date:
            dates = frame[table.date]
            assert dates.min() >= START and dates.max() < as_of(small_world.months), name


def test_references_point_at_real_rows(small_world):
    raw = small_world.raw
    for name, table in RAW_SCHEMA.items():
        for column, target in table.references.items():
            key = RAW_SCHEMA[target].key[0]
            values = raw[name][column].dropna()
            missing = ~values.isin(raw[target][key])
            assert not missing.any(), f"{name}.{column} -> {target}: {values[missing].head()}"
    leads = raw["leads"]
    converted = leads[leads["status"] == "converted"]
    assert converted["customer_id"].notna().all()
    customers = raw["customers"].set_index("customer_id")
    assert (customers.loc[converted["customer_id"], "lead_id"].values == converted["lead_id"]).all()
    touches = raw["marketing_touches"]
    for kind, table, key in (
        ("lead", "leads", "lead_id"),
        ("customer", "customers", "customer_id"),
    ):
        ids = touches.loc[touches["entity_kind"] == kind, "entity_id"]
        assert ids.isin(raw[table][key]).all(), kind


def test_ground_truth_covers_every_eligible_entity_and_cutoff(small_world):
    raw, truth = small_world.raw, small_world.truth
    cutoffs = pd.date_range(START + pd.DateOffset(months=1), as_of(small_world.months), freq="MS")
    for model in ("churn", "expansion", "referral", "clv"):
        assert set(truth[model]["cutoff"]) == set(cutoffs), model
    for cutoff in cutoffs[::5]:
        active = set(active_at(raw["lifecycle_events"], cutoff))
        table = truth["churn"]
        assert set(table.loc[table["cutoff"] == cutoff, "customer_id"]) == active, cutoff
        leads = raw["leads"]
        aged = leads[
            (leads["created_at"] < cutoff - pd.DateOffset(months=12))
            & ~(leads["converted_at"] < cutoff)
        ]
        dormant = truth["reactivation"]
        at = dormant[(dormant["cutoff"] == cutoff) & (dormant["entity_kind"] == "lead")]
        # Leads already answering a reactivation touch are not eligible again.
        assert set(at["entity_id"]) <= set(aged["lead_id"])
        assert len(at) >= 0.95 * len(aged)
    for model, column in (("churn", "probability"), ("clv", "expected_revenue")):
        values = truth[model][column]
        assert values.notna().all() and (values >= 0).all()
    assert truth["churn"]["probability"].between(0, 1).all()


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    pos = y.astype(bool)
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))


def test_truth_is_calibrated_and_informative_but_not_certain(rate_world):
    raw, truth = rate_world.raw, rate_world.truth
    events = raw["lifecycle_events"]
    rows = []
    for k in range(6, 30, 3):
        cutoff = START + pd.DateOffset(months=k)
        horizon = cutoff + pd.DateOffset(months=3)
        lapsed = events[
            (events["event"] == "churn")
            & (events["event_date"] >= cutoff)
            & (events["event_date"] < horizon)
        ]["customer_id"]
        at = truth["churn"][truth["churn"]["cutoff"] == cutoff]
        rows.append(at.assign(label=at["customer_id"].isin(lapsed)))
    joined = pd.concat(rows)
    assert abs(joined["label"].mean() - joined["probability"].mean()) < 0.01
    auc = _auc(joined["label"].to_numpy(), joined["probability"].to_numpy())
    assert 0.7 < auc < 0.97, auc
    # A naive signal (tenure) carries some, but much less, information than the oracle.
    signup = raw["customers"].set_index("customer_id")["signup_date"]
    tenure = (joined["cutoff"] - joined["customer_id"].map(signup)).dt.days.to_numpy()
    assert _auc(joined["label"].to_numpy(), -tenure) < auc - 0.05


def test_the_data_shows_the_drivers_it_stands_for(rate_world):
    """Upgrade prompts per user rise with budget (a bigger plan at signup shows a bigger
    budget); website visits stop when a lead becomes a customer; leads with a higher fit score
    convert more often."""
    raw = rate_world.raw
    usage, customers = raw["usage_weekly"], raw["customers"].set_index("customer_id")
    per_user = usage.groupby("customer_id")[["upgrade_prompts", "active_users"]].sum()
    rate = (per_user["upgrade_prompts"] / per_user["active_users"].clip(lower=1)).rename("rate")
    by_tier = customers.join(rate)["rate"].groupby(customers["signup_plan_tier"]).mean()
    assert by_tier["basic"] < by_tier["pro"]
    assert usage["upgrade_prompts"].sum() > 0

    leads = raw["leads"].set_index("lead_id")
    visits = raw["web_visits"].join(leads["converted_at"], on="lead_id")
    after = visits["converted_at"].notna() & (visits["visit_date"] >= visits["converted_at"])
    assert not after.any(), visits[after].head()
    converted = leads["converted_at"].notna()
    high = leads["lead_score"] >= leads["lead_score"].median()
    assert converted[high].mean() > converted[~high].mean()


def test_an_account_holding_everything_meets_no_upgrade_prompt():
    from simulator import model as m

    users, budget, engagement = np.array([5.0, 5.0]), np.array([1.0, 1.0]), np.zeros(2)
    rate = m.upgrade_prompt_rate(users, budget, engagement, np.array([True, False]))
    assert rate[0] > 0 and rate[1] == 0.0
    richer = m.upgrade_prompt_rate(users, budget + 1.0, engagement, np.array([True, True]))
    assert richer[0] > rate[0]


def test_advancing_keeps_history_and_adds_a_month(tmp_path: Path):
    raw_dir, truth_dir = tmp_path / "raw", tmp_path / "truth"
    write_world(simulate(months=24, scale=0.03, seed=3), raw_dir, truth_dir)
    before = read_tables(raw_dir)
    before_truth = read_tables(truth_dir)
    manifest = advance_world(raw_dir, truth_dir, 1)
    after = read_tables(raw_dir)
    assert manifest.months == 25
    end = as_of(24)
    for name, table in RAW_SCHEMA.items():
        if not table.date or name in ("customers", "leads"):
            continue
        old = before[name]
        new = after[name]
        new_part = new[new[table.date] < end].reset_index(drop=True)
        pd.testing.assert_frame_equal(old, new_part, obj=name)
        assert len(new) >= len(old)
    assert len(after["orders"]) > len(before["orders"])
    after_truth = read_tables(truth_dir)
    old_churn = before_truth["churn"]
    new_churn = after_truth["churn"][after_truth["churn"]["cutoff"] <= end]
    pd.testing.assert_frame_equal(old_churn, new_churn.reset_index(drop=True))
    with pytest.raises(ValueError, match="at least 1"):
        advance_world(raw_dir, truth_dir, 0)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="scale must be positive"):
        simulate(scale=0)
    with pytest.raises(ValueError, match="months"):
        simulate(months=5)
