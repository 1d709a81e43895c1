"""Feature store: pure transforms, leakage guards, bad input, and a real Feast repo end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.columns import VIEW_COLUMNS, service_features, view_features
from features.pipeline import build_features
from features.raw_schema import RAW_SCHEMA
from features.store import (
    NoFeaturesError,
    OnlineReader,
    StoreConfig,
    UnknownEntityError,
    apply,
    built_cutoffs,
    historical_matrix,
    import_feast,
    materialize,
    online_refs,
    open_store,
)
from features.transforms import FeatureBuilder, build_feature_tables
from features.validation import RawDataError, validate_raw
from simulator.io import as_of, write_world
from simulator.world import simulate
from tests.factories import tiny_raw

NOW = pd.Timestamp("2027-06-01")


CUTOFF = pd.Timestamp("2024-07-01")


def test_hand_computed_customer_features():
    row = FeatureBuilder(tiny_raw()).customer_features(CUTOFF).set_index("customer_id")
    assert list(row.index) == ["C1", "C2"]
    c1 = row.loc["C1"]
    assert c1["tenure_days"] == (CUTOFF - pd.Timestamp("2024-01-10")).days
    assert c1["plan_tier_rank"] == 1 and c1["upsell_headroom"] == 1
    assert c1["add_ons_available"] == 1  # one of two add-ons bought
    assert c1["monthly_recurring_revenue"] == 99.0 + 19.0
    assert c1["orders_1m"] == 2 and c1["revenue_1m"] == 99.0 + 19.0
    assert c1["orders_3m"] == 3 and c1["orders_12m"] == 4
    assert c1["days_since_last_order"] == 19  # 2024-06-12
    assert c1["days_to_renewal"] == (pd.Timestamp("2025-01-10") - CUTOFF).days
    assert c1["sessions_per_week_4w"] == 4.0
    assert c1["sessions_per_week_12w"] == pytest.approx((8 * 10 + 4 * 4) / 12)
    assert c1["usage_decline_pct"] == pytest.approx(100 * (1 - 4 / 8))
    assert c1["severe_tickets_90d"] == 1 and c1["tickets_365d"] == 1
    assert c1["nps_last"] == 6 and c1["nps_change"] == -3
    assert c1["email_opens_90d"] == 1
    assert c1["referrals_total"] == 1 and c1["days_since_last_referral"] == 6
    assert c1["industry_code"] == 1 and c1["source_code"] == 2
    assert c1["upgrade_prompts_per_week_4w"] == 1.0  # one a week, 5 active users
    assert c1["upgrade_prompts_per_user_12w"] == pytest.approx(1 / 5)
    c2 = row.loc["C2"]
    assert np.isnan(c2["nps_last"])
    assert c2["days_since_last_referral"] == 9999


def test_former_and_lead_views():
    builder = FeatureBuilder(tiny_raw())
    later = pd.Timestamp("2024-10-01")
    former = builder.former_customer_features(later).set_index("customer_id")
    assert list(former.index) == ["C2"]
    assert former.loc["C2", "former_prior_spend"] == 78.0
    assert former.loc["C2", "former_months_since_lapse"] == pytest.approx(16 / 30.44)
    leads = builder.lead_features(CUTOFF).set_index("lead_id")
    assert list(leads.index) == ["L3"]  # L1/L2 converted, L4 is fresh
    assert leads.loc["L3", "lead_opens_total"] == 1
    assert leads.loc["L3", "lead_reactivation_touches"] == 0  # the touch is after the cutoff
    assert leads.loc["L3", "lead_fit_score"] == 40
    # Visits on 2024-05-02 and 2024-06-15: one in the last 30 days, both in the last 90.
    assert leads.loc["L3", "lead_web_visits_30d"] == 1
    assert leads.loc["L3", "lead_web_visits_90d"] == 2
    assert leads.loc["L3", "lead_days_since_last_visit"] == 16


def test_tables_match_the_feast_schema(small_world):
    tables = build_feature_tables(small_world.raw, [as_of(small_world.months)])
    for view, by_cutoff in tables.items():
        frame = next(iter(by_cutoff.values()))
        key = VIEW_COLUMNS[view][0]
        assert list(frame.columns) == [key, "event_timestamp", *view_features(view)], view
        _, ints, floats = VIEW_COLUMNS[view]
        assert all(frame[c].dtype == np.int64 for c in ints), view
        assert all(frame[c].dtype == np.float64 for c in floats), view
        assert str(frame["event_timestamp"].dtype) == "datetime64[ns, UTC]"
        assert not frame[key].duplicated().any()


def _perturb_after(raw: dict[str, pd.DataFrame], cutoff: pd.Timestamp, seed: int) -> dict:
    """Change, drop and add every kind of raw event dated at or after the cutoff."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, frame in raw.items():
        frame = frame.copy()
        date = RAW_SCHEMA[name].date
        if date is not None and name not in ("customers", "leads"):
            future = frame[date] >= cutoff
            for column, spec in RAW_SCHEMA[name].columns.items():
                if column == date or column.endswith("_id") or spec.allowed:
                    continue
                if spec.kind in ("int", "float"):
                    frame.loc[future, column] = frame.loc[future, column] * 3 + 1
            extra = frame[future].sample(frac=0.5, random_state=seed, replace=True)
            frame = pd.concat([frame[~future | (rng.random(len(frame)) < 0.5)], extra])
            if RAW_SCHEMA[name].key:
                key = RAW_SCHEMA[name].key[0]
                if frame[key].dtype == np.int64:
                    frame[key] = np.arange(1, len(frame) + 1)
                else:
                    frame = frame.drop_duplicates(list(RAW_SCHEMA[name].key))
        out[name] = frame.reset_index(drop=True)
    customers = out["customers"]
    customers["status"] = rng.choice(["active", "former"], len(customers))
    customers["plan_tier"] = rng.choice(["basic", "pro", "business"], len(customers))
    customers.loc[customers["churn_date"] >= cutoff, "churn_date"] = pd.NaT
    leads = out["leads"]
    later = leads["converted_at"] >= cutoff
    leads.loc[later, "converted_at"] = leads.loc[later, "converted_at"] + pd.Timedelta(days=40)
    leads["status"] = rng.choice(["open", "aged", "converted"], len(leads))
    return out


def test_events_after_a_cutoff_never_change_its_features(small_world):
    cutoff = as_of(small_world.months) - pd.DateOffset(months=6)
    before = build_feature_tables(small_world.raw, [cutoff])
    after = build_feature_tables(_perturb_after(small_world.raw, cutoff, seed=3), [cutoff])
    for view in before:
        pd.testing.assert_frame_equal(before[view][cutoff], after[view][cutoff], obj=view)
    # ...while events before the cutoff do change them (the guard is not vacuous).
    raw = dict(small_world.raw)
    orders = raw["orders"].copy()
    orders.loc[orders["order_date"] < cutoff, "amount"] *= 2
    raw["orders"] = orders
    changed = build_feature_tables(raw, [cutoff])["customer_features"][cutoff]
    assert not changed["revenue_12m"].equals(before["customer_features"][cutoff]["revenue_12m"])


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda r: r["orders"].drop(columns=["amount"]), "table orders: column amount is missing"),
        (
            lambda r: r["orders"].assign(amount=r["orders"]["amount"].astype(str)),
            "table orders: column amount has type string, expected float",
        ),
        (
            lambda r: pd.concat([r["customers"], r["customers"].iloc[:1]]),
            "table customers: duplicate customer_id",
        ),
        (
            lambda r: r["orders"].assign(
                order_date=r["orders"]["order_date"].where(
                    r["orders"].index != 0, pd.Timestamp("2099-01-01")
                )
            ),
            "table orders: column order_date has date 2099-01-01",
        ),
        (
            lambda r: r["orders"].assign(
                customer_id=r["orders"]["customer_id"].where(r["orders"].index != 0, "C9999")
            ),
            "table orders: column customer_id refers to unknown customers 'C9999'",
        ),
        (
            lambda r: r["customers"].assign(status="paused"),
            "table customers: column status has value 'paused'",
        ),
    ],
)
def test_bad_raw_tables_are_named(break_it, message):
    raw = tiny_raw()
    name = message.split()[1].rstrip(":")
    raw[name] = break_it(raw).reset_index(drop=True)
    with pytest.raises(RawDataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_raw(raw, NOW)


def test_a_missing_table_is_named():
    raw = tiny_raw()
    del raw["referrals"]
    with pytest.raises(RawDataError, match="raw table referrals is missing"):
        validate_raw(raw, NOW)


def test_bad_input_writes_nothing(tmp_path: Path, small_world):
    raw_dir, features_dir = tmp_path / "raw", tmp_path / "features"
    write_world(small_world, raw_dir, tmp_path / "truth")
    orders = pd.read_parquet(raw_dir / "orders.parquet")
    orders.loc[0, "customer_id"] = "C-nobody"
    orders.to_parquet(raw_dir / "orders.parquet", index=False)
    with pytest.raises(RawDataError, match="C-nobody"):
        build_features(raw_dir, features_dir, now=NOW)
    assert not features_dir.exists() or not any(features_dir.rglob("*.parquet"))
    (raw_dir / "nps_surveys.parquet").write_bytes(b"not parquet")
    with pytest.raises(RawDataError, match="raw table nps_surveys cannot be read"):
        build_features(raw_dir, features_dir, now=NOW)


# ---- a real Feast repo ----------------------------------------------------------------------
def test_build_covers_every_cutoff_and_is_incremental(feast_home):
    home, config, _, report = feast_home
    assert len(report.cutoffs_built) == report.cutoffs_total == 36
    again = build_features(home / "raw", home / "features", now=NOW)
    assert again.cutoffs_built == []
    assert built_cutoffs(home / "features") == report.cutoffs_built


def test_training_set_is_point_in_time(feast_home):
    home, config, store, report = feast_home
    table = pd.read_parquet(home / "features" / "customer_features")
    cutoff = report.cutoffs_built[-4]
    at = table[table["event_timestamp"] == cutoff.tz_localize("UTC")].head(40)
    entity = pd.DataFrame({"customer_id": at["customer_id"], "event_timestamp": cutoff})
    # Between two cutoffs the join must still use the earlier row, never the next month's.
    mid = entity.assign(event_timestamp=cutoff + pd.Timedelta(days=15))
    for frame in (entity, mid):
        keys, matrix = historical_matrix(store, "churn_v1", frame)
        assert list(keys["customer_id"]) == list(at["customer_id"])
        names = [n for n in service_features("churn_v1") if n in at.columns]
        expected = at[names].to_numpy(float)
        np.testing.assert_allclose(matrix[names].to_numpy(), expected, equal_nan=True)
        assert all(matrix.dtypes == np.float64)
    later = report.cutoffs_built[-3]
    next_rows = table[table["event_timestamp"] == later.tz_localize("UTC")].set_index("customer_id")
    keys, matrix = historical_matrix(store, "churn_v1", mid)
    same = next_rows.reindex(keys["customer_id"])["tenure_days"].to_numpy()
    assert not np.allclose(matrix["tenure_days"].to_numpy(), same, equal_nan=True)


def test_on_demand_features_are_computed(feast_home):
    home, _, store, report = feast_home
    table = pd.read_parquet(home / "features" / "customer_features")
    at = table[table["event_timestamp"] == report.as_of.tz_localize("UTC")].head(10)
    entity = pd.DataFrame({"customer_id": at["customer_id"], "event_timestamp": report.as_of})
    _, matrix = historical_matrix(store, "clv_v1", entity)
    expected = at["revenue_12m"].to_numpy() / np.maximum(at["seats"].to_numpy(), 1)
    np.testing.assert_allclose(matrix["revenue_per_seat_12m"].to_numpy(), expected)


def test_reactivation_rows_mix_leads_and_former_customers(feast_home):
    home, _, store, report = feast_home
    leads = pd.read_parquet(home / "features" / "lead_features").head(5)
    former = pd.read_parquet(home / "features" / "former_customer_features").head(5)
    entity = pd.DataFrame(
        {
            "lead_id": list(leads["lead_id"]) + [""] * 5,
            "customer_id": [""] * 5 + list(former["customer_id"]),
            "event_timestamp": list(leads["event_timestamp"]) + list(former["event_timestamp"]),
        }
    )
    _, matrix = historical_matrix(store, "reactivation_v1", entity)
    assert matrix["lead_age_days"].iloc[:5].notna().all()
    assert matrix["lead_age_days"].iloc[5:].isna().all()
    assert matrix["former_prior_spend"].iloc[5:].notna().all()
    assert matrix["former_prior_spend"].iloc[:5].isna().all()


def test_online_lookup_tells_unknown_from_featureless(feast_home):
    home, _, store, report = feast_home
    latest = pd.read_parquet(
        home / "features" / "customer_features" / f"{report.as_of:%Y-%m-%d}.parquet"
    )
    directory = pd.read_parquet(home / "features" / "customer_directory" / "directory.parquet")
    former = directory.loc[directory["customer_status"] == 2, "customer_id"].iloc[0]
    active = list(latest["customer_id"].iloc[:3])
    refs = online_refs(store, ["churn_v1", "expansion_v1", "referral_v1", "clv_v1"])
    reader = OnlineReader(store, refs, "customer_id", "customer_directory")
    found = reader.lookup([*active, "C-nobody", former])
    assert list(found.known) == [True, True, True, False, True]
    assert list(found.has_features) == [True, True, True, False, False]
    assert found.status == {former: 2}
    expected = latest.set_index("customer_id").loc[active, "tenure_days"].to_numpy()
    np.testing.assert_allclose(found.columns(["tenure_days"])[:3, 0], expected)
    assert set(service_features("churn_v1")) <= set(found.positions)
    assert found.for_service("churn_v1").shape == (5, len(service_features("churn_v1")))
    rows = latest.set_index("customer_id").loc[active]
    expected_ratio = rows["revenue_12m"].to_numpy() / np.maximum(rows["seats"].to_numpy(), 1)
    ratio = found.columns(["revenue_per_seat_12m"])[:3, 0]
    np.testing.assert_allclose(ratio, expected_ratio)
    assert np.isnan(found.matrix[3:]).all()
    with pytest.raises(UnknownEntityError, match="C-nobody"):
        reader.lookup(["C-nobody"]).check()
    with pytest.raises(NoFeaturesError, match=f"{former}.*former customer"):
        reader.lookup([former]).check()


def test_online_reader_matches_get_online_features(feast_home):
    """The prepared reader returns exactly what Feast's own `get_online_features` (with the
    on-demand view) returns, for repeated, unknown and featureless ids alike."""
    home, _, store, report = feast_home
    directory = pd.read_parquet(home / "features" / "customer_directory" / "directory.parquet")
    ids = list(directory["customer_id"].iloc[:40]) + ["C-nobody"]
    ids += ids[:3]  # repeated ids come back once per request
    refs = online_refs(store, ["churn_v1", "expansion_v1", "referral_v1", "clv_v1"])
    found = OnlineReader(store, refs, "customer_id", "customer_directory").lookup(ids)
    response = store.get_online_features(features=refs, entity_rows={"customer_id": ids})
    expected = response.to_dict()
    names = [ref.split(":", 1)[1] for ref in refs]
    reference = np.array([expected[n] for n in names], dtype=np.float64).T
    np.testing.assert_array_equal(found.matrix, reference)
    assert found.ids == ids and found.matrix.dtype == np.float64
    assert found.has_features.sum() > 0 and not found.has_features.all()


def test_feast_import_leaves_typeguard_alone():
    import typeguard

    before = typeguard.typechecked
    import_feast()
    import feast

    assert typeguard.typechecked is before
    assert feast.FeatureStore is not None


def test_online_reader_bad_input(feast_home):
    _, _, store, _ = feast_home
    with pytest.raises(ValueError, match="at least one"):
        OnlineReader(store, [], "customer_id", "customer_directory")
    refs = online_refs(store, ["reactivation_v1"])
    with pytest.raises(KeyError, match="customer_id"):
        OnlineReader(store, refs, "lead_id", "lead_directory")  # no value for the other key
    reader = OnlineReader(store, refs, "lead_id", "lead_directory", {"customer_id": ""})
    empty = reader.lookup([])
    assert empty.matrix.shape == (0, len(refs)) and empty.known.shape == (0,)


def test_advancing_a_month_builds_and_materializes_only_it(tmp_path: Path):
    raw_dir, features_dir = tmp_path / "raw", tmp_path / "features"
    write_world(simulate(months=24, scale=0.02, seed=11), raw_dir, tmp_path / "truth")
    first = build_features(raw_dir, features_dir, now=NOW)
    stamp = (features_dir / "customer_features" / "2025-06-01.parquet").read_bytes()
    config = StoreConfig(features_dir=features_dir, feast_dir=tmp_path / "feast")
    store = open_store(config)
    apply(store, features_dir)
    materialize(store, features_dir, first.as_of)

    from simulator.io import advance_world

    advance_world(raw_dir, tmp_path / "truth", 1)
    second = build_features(raw_dir, features_dir, now=NOW)
    assert second.cutoffs_built == [first.as_of + pd.DateOffset(months=1)]
    assert (features_dir / "customer_features" / "2025-06-01.parquet").read_bytes() == stamp
    materialize(store, features_dir, second.as_of)
    fresh = pd.read_parquet(
        features_dir / "customer_features" / f"{second.as_of:%Y-%m-%d}.parquet"
    ).iloc[0]
    refs = online_refs(store, ["churn_v1"])
    reader = OnlineReader(store, refs, "customer_id", "customer_directory")
    found = reader.lookup([fresh["customer_id"]])
    assert found.columns(["tenure_days"])[0, 0] == fresh["tenure_days"]


def test_changed_feature_definitions_rebuild_every_cutoff(tmp_path: Path):
    """Files built by older code (other columns) are rebuilt, not mixed with new ones."""
    raw_dir, features_dir = tmp_path / "raw", tmp_path / "features"
    write_world(simulate(months=18, scale=0.02, seed=12), raw_dir, tmp_path / "truth")
    first = build_features(raw_dir, features_dir, now=NOW)
    path = features_dir / "customer_features" / f"{first.as_of:%Y-%m-%d}.parquet"
    pd.read_parquet(path).drop(columns=["tenure_days"]).to_parquet(path, index=False)
    again = build_features(raw_dir, features_dir, now=NOW)
    assert again.cutoffs_built == first.cutoffs_built
    assert "tenure_days" in pd.read_parquet(path).columns


def test_feast_cli_plans_the_repo(feast_home):
    home, config, _, _ = feast_home
    env = {**os.environ, **config.environment(), "CLV_HOME": str(home), "FEAST_USAGE": "False"}
    feast = Path(sys.executable).with_name("feast")
    result = subprocess.run(
        [str(feast), "plan"],
        cwd=Path(__file__).parents[1] / "features",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "techflow" in result.stdout


def test_batched_sqlite_store_writes_exactly_what_feasts_loop_writes(feast_home, tmp_path: Path):
    """The embedded online store only batches Feast's SQLite write: same table, same rows."""
    import sqlite3
    from datetime import UTC, datetime

    from feast.infra.online_stores.sqlite import SqliteOnlineStore
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from features.online_sqlite import BatchedSqliteOnlineStore
    from features.store import StoreConfig, repo_config

    _, config, store, _ = feast_home
    view = store.get_feature_view("customer_features")
    when = datetime(2025, 12, 1, tzinfo=UTC)
    data = [
        (
            EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=f"C-{i}")]),
            {
                "tenure_months": Value(double_val=i / 3),
                "seats": Value(int64_val=i),
                "orders_1m": Value(),
            },  # an unset value (missing feature) too
            when,
            None if i % 2 else when,
        )  # fmt: skip
        for i in range(50)
    ]
    tables = {}
    for name, impl in (("feast", SqliteOnlineStore()), ("batched", BatchedSqliteOnlineStore())):
        repo = repo_config(StoreConfig(config.features_dir, tmp_path / name))
        impl.update(repo, [], [view], [], [], partial=False)
        impl.online_write_batch(repo, view, data, None)
        impl.online_write_batch(repo, view, data[:10], None)  # upserts, as materialize does
        with sqlite3.connect(repo.online_store.path) as db:
            rows = db.execute(
                "SELECT entity_key, feature_name, value, value_text, event_ts, created_ts "
                "FROM techflow_customer_features ORDER BY entity_key, feature_name"
            ).fetchall()
        tables[name] = rows
    assert type(store._get_provider().online_store).__name__ == "BatchedSqliteOnlineStore"
    assert len(tables["feast"]) == 150 and tables["batched"] == tables["feast"]
