"""`clv retrain`: bad data stops it before anything is trained; month N -> N+1 retrains on the
new window; one run at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clv.retrain import RetrainError, exclusive, run_retrain
from clv.settings import Settings
from simulator.io import advance_world, write_world
from simulator.world import simulate


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    home = tmp_path / "var"
    write_world(simulate(months=24, scale=0.05, seed=5), home / "raw", home / "truth")
    return Settings(home=home, trials=2)


def _retype(path: Path, column: str) -> None:
    """The column's values written as text: a type change upstream."""
    import pandas as pd

    table = pd.read_parquet(path)
    table[column] = table[column].astype(str)
    table.to_parquet(path, index=False)


def _force_champions(settings: Settings) -> None:
    from registry.operations import promote
    from registry.store import RegistryStore
    from training.specs import SPECS

    store = RegistryStore(settings.tracking_uri, settings.artifacts_dir)
    for name in store.models():
        if name in SPECS and "champion" not in store.aliases(name):
            promote(store, SPECS[name], force=True, reason="test: a champion to drift from")


def _champions(settings: Settings) -> dict[str, str]:
    from registry.store import RegistryStore

    store = RegistryStore(settings.tracking_uri, settings.artifacts_dir)
    return {
        m: store.aliases(m).get("champion", "") for m in store.models() if m != "registry-audit"
    }


def test_month_advance_retrains_on_the_new_window(settings: Settings):
    first = run_retrain(settings, print)
    assert first["status"] == "done" and first["features_as_of"] == "2025-12-01"
    assert "churn" in first["models"]
    _force_champions(settings)  # the tiny world's gate may refuse some first versions
    advance_world(settings.raw_dir, settings.truth_dir, 1)
    second = run_retrain(settings, print)
    assert second["features_as_of"] == "2026-01-01"
    churn = second["models"]["churn"]
    assert churn["version"] != first["models"]["churn"]["version"]
    assert churn["decision"].split()[0] in ("promoted", "refused")
    drift = second["drift"]
    assert set(drift) == {m for m, v in _champions(settings).items() if v}, drift
    assert "churn" in drift
    for name, report in drift.items():
        assert "error" not in report, (name, report)
        assert report["score_psi"] >= 0 and report["max_psi"] >= 0
        # the calendar month always differs from a many-month window: not counted as drift
        assert "month_of_year" not in {row["feature"] for row in report["top"]}
        assert report["reference"].split()[1] == "train"  # against the champion's training rows
    from mlflow.tracking import MlflowClient

    client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("retrain").experiment_id])
    assert len(runs) == 2  # drift and the summary are logged to MLflow per run
    written = sorted((settings.home / "retrain").glob("*/summary.json"))
    assert json.loads(written[-1].read_text())["status"] == "done"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: (raw / "orders.parquet").write_bytes(b"PAR1 truncated"), "orders"),
        (lambda raw: (raw / "referrals.parquet").unlink(), "referrals is missing"),
        (lambda raw: _retype(raw / "orders.parquet", "amount"), "table orders: column amount"),
    ],
)
def test_bad_data_trains_nothing(settings: Settings, damage, message):
    damage(settings.raw_dir)
    with pytest.raises(RetrainError, match=message):
        run_retrain(settings, print)
    summary = json.loads(next((settings.home / "retrain").glob("*/summary.json")).read_text())
    assert summary["status"] == "invalid data" and message in summary["problems"][0]
    assert not (settings.home / "mlflow.db").exists()  # no model trained, none promoted


def test_a_half_empty_month_is_rejected(settings: Settings):
    import pandas as pd

    path = settings.raw_dir / "orders.parquet"
    orders = pd.read_parquet(path)
    last = orders["order_date"] >= pd.Timestamp("2025-11-01")
    orders = orders[~last | (orders.index % 3 == 0)]
    orders.to_parquet(path, index=False)
    with pytest.raises(RetrainError, match="table orders: .* under 50% of the usual"):
        run_retrain(settings, print)


def test_one_run_at_a_time(tmp_path: Path):
    lock = tmp_path / "retrain.lock"
    with exclusive(lock), pytest.raises(RetrainError, match="another retrain"), exclusive(lock):
        pass


def test_drift_populations_cover_customer_and_dormant_models(feast_home):
    """The newest month's entities for drift: active customers, and aged leads plus former
    customers for reactivation, each with the full feature service from Feast."""
    from features.columns import service_features
    from features.store import historical_matrix, latest_population

    home, _, store, _ = feast_home
    _, populations = latest_population(home / "features")
    for entity, service in (("customer", "churn_v1"), ("dormant", "reactivation_v1")):
        frame = populations[entity]
        assert len(frame) > 20, entity
        _, matrix = historical_matrix(store, service, frame)
        assert list(matrix.columns) == service_features(service)
        assert matrix.notna().any(axis=1).mean() > 0.9, entity


def test_drift_table_skips_calendar_features():
    import numpy as np
    import pandas as pd

    from features.columns import CALENDAR_FEATURES
    from training.drift import drift_table

    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"month_of_year": rng.integers(1, 13, 500), "x": rng.normal(size=500)})
    current = pd.DataFrame({"month_of_year": np.full(200, 1), "x": rng.normal(size=200)})
    assert drift_table(reference, current)["feature"].iloc[0] == "month_of_year"  # huge PSI
    table = drift_table(reference, current, skip=CALENDAR_FEATURES)
    assert list(table["feature"]) == ["x"] and table["psi"].iloc[0] < 0.1
