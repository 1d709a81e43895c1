"""Batch scoring (`clv score --all`): the same numbers as the service's /score, with and without
reasons, from the latest cutoff of the offline store read exactly as Feast reads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clv.compose import engine_config
from clv.settings import Settings
from clv.workflows import batch_scores, score_all
from features.columns import service_features
from features.store import historical_frame, latest_population, online_refs, snapshot_matrix
from serving.engine import Engine

SERVICES = {
    "customer": ["churn_v1", "expansion_v1", "referral_v1", "clv_v1"],
    "dormant": ["reactivation_v1"],
}


@pytest.mark.parametrize("kind", sorted(SERVICES))
def test_snapshot_matrix_is_feasts_point_in_time_join_of_the_latest_cutoff(feast_home, kind):
    home, config, store, _ = feast_home
    as_of, entities = latest_population(config.features_dir)
    names = list(dict.fromkeys(n for s in SERVICES[kind] for n in service_features(s)))
    found = snapshot_matrix(config.features_dir, as_of, entities[kind], names)
    _, expected = historical_frame(store, online_refs(store, SERVICES[kind]), entities[kind], kind)
    assert list(found.columns) == names and len(found) == len(entities[kind])
    assert np.array_equal(found.to_numpy(), expected[names].to_numpy(np.float64), equal_nan=True), (
        "the latest cutoff read directly differs from Feast's retrieval"
    )
    assert np.isnan(found.to_numpy()).all(axis=1).sum() < len(found)  # rows were joined


def test_snapshot_matrix_bad_input(feast_home):
    _, config, _, _ = feast_home
    as_of, entities = latest_population(config.features_dir)
    with pytest.raises(KeyError, match="no_such_feature"):
        snapshot_matrix(config.features_dir, as_of, entities["customer"], ["no_such_feature"])
    with pytest.raises(FileNotFoundError, match="1999-01-01"):
        snapshot_matrix(
            config.features_dir, pd.Timestamp("1999-01-01"), entities["customer"], ["seats"]
        )


def test_score_all_with_and_without_reasons_equals_the_service(served_home, tmp_path: Path):
    """Every customer row of `clv score --all` carries the /score answer of that id (score,
    percentile, band, version, and with --reasons the first reason); the reasons change
    nothing else."""
    home, uri, report = served_home
    settings = Settings(home=home, mlflow_tracking_uri=uri)
    score_all(settings, tmp_path / "plain.parquet")
    message = score_all(settings, tmp_path / "reasons.parquet", reasons=True)
    assert "entities/s" in message and "and reasons" in message
    plain = pd.read_parquet(tmp_path / "plain.parquet")
    explained = pd.read_parquet(tmp_path / "reasons.parquet")
    assert {"churn_top_reason", "clv_top_reason"} <= set(explained.columns)
    assert not any(c.endswith("_top_reason") for c in plain.columns)
    pd.testing.assert_frame_equal(plain, explained[list(plain.columns)])
    assert not any(c.startswith(("expansion_", "reactivation_")) for c in plain.columns)

    customers = explained[explained["kind"] == "customer"].reset_index(drop=True)
    assert len(customers) > 100 and customers["entity_id"].is_unique
    engine = Engine(engine_config(settings))
    engine.start(background=False)
    answers = [json.loads(body) for body in engine.customer_json(customers["entity_id"].tolist())]
    for model in ("churn", "clv"):
        served = [a[model] for a in answers]
        assert customers[f"{model}_score"].tolist() == [a["score"] for a in served]
        assert customers[f"{model}_percentile"].round(2).tolist() == [
            a["percentile"] for a in served
        ]
        assert customers[f"{model}_band"].tolist() == [a["band"] for a in served]
        assert set(customers[f"{model}_version"]) == {a["version"] for a in served} == {"1"}
        assert customers[f"{model}_top_reason"].tolist() == [
            a["reasons"][0]["feature"] for a in served
        ]
    assert set(explained["features_as_of"]) == {str(report.as_of.date())}
    assert [a["features_as_of"] for a in answers[:1]] == [str(report.as_of.date())]


def test_batch_scores_report_their_phases(served_home):
    home, uri, _ = served_home
    scores = batch_scores(Settings(home=home, mlflow_tracking_uri=uri))
    phases = {"champions", "features", "scoring", "scoring_customer", "scoring_dormant"}
    assert set(scores.seconds) == phases
    assert all(s >= 0 for s in scores.seconds.values()) and scores.rate > 0
    assert scores.seconds["scoring_customer"] <= scores.seconds["scoring"]
    assert scores.customer_rate > 0
    assert scores.models == 2 and len(scores.frame) == scores.frame["entity_id"].nunique()


def test_score_all_without_champions_says_why(served_home, tmp_path: Path):
    home, _, _ = served_home
    empty = Settings(home=home, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'none.db'}")
    with pytest.raises(LookupError, match="cannot score: no model has a champion"):
        score_all(empty, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_score_all_without_feature_tables_says_why(served_home, tmp_path: Path):
    _, uri, _ = served_home
    bare = Settings(home=tmp_path / "home", mlflow_tracking_uri=uri)
    with pytest.raises(LookupError, match="no feature tables in .*clv features build"):
        score_all(bare, tmp_path / "out.parquet")
