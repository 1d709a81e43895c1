"""Serving: scoring maths without BentoML, the engine directly, the service over ASGI, and a
real `bentoml serve` subprocess over HTTP with a hot-swap while it serves."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from features.store import NoFeaturesError, StoreConfig, UnknownEntityError
from serving.engine import Engine, EngineConfig, NotReadyError, customer_json
from serving.scoring import ScoreTable, bands, percentiles, row_result, row_results, top_reasons


def test_percentiles_and_bands():
    quantiles = np.linspace(0.0, 1.0, 101) ** 2
    pct = percentiles(np.array([-1.0, 0.0, 0.25, 1.0, 2.0]), quantiles)
    assert pct[0] == 0 and pct[-1] == 100 and pct[2] == pytest.approx(50.0)
    assert np.all(np.diff(percentiles(np.linspace(0, 1, 50), quantiles)) >= 0)
    flat = percentiles(np.array([0.0]), np.zeros(101))
    assert flat[0] == pytest.approx(50.0)  # ties sit in the middle
    assert list(bands(np.array([10.0, 50.0, 79.9, 80.0]))) == ["low", "medium", "medium", "high"]


def test_top_reasons_orders_by_magnitude():
    contributions = np.array([[0.1, -0.9, 0.3, 0.0, 0.5, 9.0]])  # last column is the bias
    idx, contrib = top_reasons(contributions, np.zeros((1, 5)), k=3)
    assert list(idx[0]) == [1, 4, 2]
    assert list(contrib[0]) == [-0.9, 0.5, 0.3]


def test_row_results_are_plain_json_values():
    table = ScoreTable(
        score=np.array([0.25, 0.75]),
        percentile=np.array([12.3456, 99.999]),
        band=np.array(["low", "high"], dtype=object),
        reason_index=np.array([[1, 0], [0, 1]]),
        reason_contribution=np.array([[-0.5, 0.25], [1.5, -0.125]], dtype=np.float32),
        values=np.array([[1.0, np.nan], [3.0, 4.0]]),
    )
    rows = row_results(table, [1, 0], ["a", "b"], "churn", "7")
    assert rows[1] == row_result(table, 0, ["a", "b"], "churn", "7")
    assert rows[1]["reasons"] == [
        {"feature": "b", "value": None, "contribution": -0.5},
        {"feature": "a", "value": 1.0, "contribution": 0.25},
    ]
    assert rows[0]["percentile"] == 100.0 and rows[0]["band"] == "high"
    assert all(type(r["score"]) is float for r in rows)
    assert json.loads(json.dumps(rows)) == rows


def _engine(home: Path, tracking_uri: str, prebuild_responses: bool = True) -> Engine:
    config = EngineConfig(
        tracking_uri=tracking_uri,
        store=StoreConfig(features_dir=home / "features", feast_dir=home / "feast"),
        poll_seconds=3600,
    )
    engine = Engine(config, prebuild_responses=prebuild_responses)
    engine.start(background=False)
    return engine


def _ids(home: Path) -> tuple[list[str], str]:
    directory = pd.read_parquet(home / "features" / "customer_directory" / "directory.parquet")
    active = directory.loc[directory["customer_status"] == 1, "customer_id"].tolist()
    former = directory.loc[directory["customer_status"] == 2, "customer_id"].iloc[0]
    return active, former


def test_engine_scores_and_explains(served_home):
    home, uri, report = served_home
    engine = _engine(home, uri)
    assert engine.ready
    active, former = _ids(home)
    result = engine.score_customers([active[0]])[0]
    assert result["features_as_of"] == str(report.as_of.date())
    churn = result["churn"]
    assert 0 < churn["score"] < 1 and 0 <= churn["percentile"] <= 100
    assert churn["version"] == "1" and churn["band"] in ("low", "medium", "high")
    assert len(churn["reasons"]) == 5
    magnitudes = [abs(r["contribution"]) for r in churn["reasons"]]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert result["clv"]["score"] > 0
    assert "expansion" not in result  # no champion: not served, not invented

    batch = engine.score_customers(active[:50][::-1])
    assert [r["customer_id"] for r in batch] == active[:50][::-1]
    with pytest.raises(UnknownEntityError, match="C-nobody"):
        engine.score_customers(["C-nobody"])
    with pytest.raises(NoFeaturesError, match="former customer"):
        engine.score_customers([former])
    with pytest.raises(NotReadyError, match="reactivation"):
        engine.score_dormant("lead_id", "L00000001")


def test_snapshot_and_online_paths_agree(served_home):
    home, uri, _ = served_home
    engine = _engine(home, uri)
    active, _ = _ids(home)
    snapshot = engine.score_customers([active[3]])[0]
    live = engine._live(engine.state, [engine.state.champions["churn"]], "customer_id", [active[3]])
    tables, row = live[active[3]]
    assert tables["churn"].score[row] == pytest.approx(snapshot["churn"]["score"])


def test_json_answers_are_the_response_model(served_home):
    """The pre-serialised snapshot answers, the live ones and the dict answers agree, and each
    is exactly what the response model serialises (null for a model without a champion)."""
    from dataclasses import replace

    from serving.api import CustomerScores

    home, uri, _ = served_home
    engine = _engine(home, uri)
    active, former = _ids(home)
    ids = [active[5], active[2], active[5]]
    expected = [CustomerScores(**r).model_dump(mode="json") for r in engine.score_customers(ids)]
    snapshot = engine.snapshot_json(ids)
    assert snapshot is not None and snapshot == engine.customer_json(ids)
    assert [json.loads(b) for b in snapshot] == expected
    assert list(json.loads(snapshot[0])) == list(CustomerScores.model_fields)
    assert json.loads(snapshot[0])["expansion"] is None
    assert engine.snapshot_json(["C-nobody"]) is None  # not in the snapshot: no answer here

    # An id outside the snapshot is looked up online and answers the same.
    state = engine.state
    assert state.customers is not None
    index = {k: v for k, v in state.customers.index.items() if k != active[2]}
    engine.state = replace(state, customers=replace(state.customers, index=index))
    assert engine.snapshot_json(ids) is None
    assert [json.loads(b) for b in engine.customer_json(ids)] == expected
    with pytest.raises(UnknownEntityError, match="C-nobody"):
        engine.customer_json([active[0], "C-nobody"])
    with pytest.raises(NoFeaturesError, match="former customer"):
        engine.customer_json([former])

    plain = _engine(home, uri, prebuild_responses=False)
    assert plain.state.customers is not None and plain.state.customers.responses is None
    assert plain.snapshot_json(ids) is None
    assert [json.loads(b) for b in plain.customer_json(ids)] == expected
    assert json.loads(customer_json(plain.score_customers([active[5]])[0])) == expected[0]


def test_hot_swap_and_a_broken_version(served_home):
    home, uri, _ = served_home
    engine = _engine(home, uri)
    active, _ = _ids(home)
    client = MlflowClient(uri, registry_uri=uri)
    client.set_registered_model_alias("churn", "champion", "2")
    try:
        assert engine.refresh()
        assert engine.score_customers([active[0]])[0]["churn"]["version"] == "2"
        broken = client.create_model_version("churn", source=str(home / "nowhere"))
        client.set_registered_model_alias("churn", "champion", broken.version)
        engine.refresh()
        assert engine.score_customers([active[0]])[0]["churn"]["version"] == "2"
        info = {m["name"]: m for m in engine.models()["models"]}
        assert "failed to load" in info["churn"]["load_error"]
    finally:
        client.set_registered_model_alias("churn", "champion", "1")


def test_registry_unreachable_is_not_ready_not_a_crash(tmp_path: Path, served_home):
    home, _, _ = served_home
    engine = _engine(home, f"sqlite:///{tmp_path / 'empty' / 'x.db'}")
    assert not engine.ready
    assert "unreachable" in engine.not_ready_reason or "champion" in engine.not_ready_reason


@pytest.fixture()
def asgi(served_home, monkeypatch):
    from starlette.testclient import TestClient

    home, uri, _ = served_home
    monkeypatch.setenv("CLV_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("CLV_BATCH_LIMIT", "20")
    monkeypatch.setenv("CLV_API_KEY", "s3cret")
    from serving.service import Scoring

    with TestClient(Scoring.to_asgi()) as client:
        deadline = time.time() + 90
        while client.get("/readyz").status_code != 200:  # champions load in the background
            assert time.time() < deadline, client.get("/models").json()
            time.sleep(0.2)
        yield client


def test_service_over_asgi(asgi, served_home):
    home, _, _ = served_home
    active, former = _ids(home)
    auth = {"Authorization": "Bearer s3cret"}
    assert asgi.get("/livez").status_code == 200
    assert asgi.get("/readyz").status_code == 200  # health stays open without the key
    assert asgi.post("/score", json={"customer_id": active[0]}).status_code == 401
    ok = asgi.post("/score", json={"customer_id": active[0]}, headers=auth)
    assert ok.status_code == 200 and ok.json()["churn"]["model"] == "churn"
    assert ok.headers["content-type"] == "application/json"
    assert ok.json()["expansion"] is None and len(ok.json()["clv"]["reasons"]) == 5
    cases = [
        ({"customer_id": "C-nobody"}, 404, "C-nobody"),
        ({"customer_id": former}, 409, "former customer"),
        ({"customer_id": 42}, 400, "customer_id"),
        ({"wrong": "x"}, 400, "invalid request"),
        ({"customer_id": "C1", "extra": 1}, 400, "extra"),
        ([1, 2], 400, "invalid request"),
        ({"customer_id": ""}, 400, "customer_id"),
    ]
    for body, code, text in cases:
        response = asgi.post("/score", json=body, headers=auth)
        assert response.status_code == code, body
        assert text in response.json()["error"]
    garbage = asgi.post(
        "/score", content=b"{no", headers={**auth, "content-type": "application/json"}
    )
    assert garbage.status_code == 400
    form = asgi.post(
        "/score", content=b"x", headers={**auth, "content-type": "multipart/form-data"}
    )
    assert form.status_code == 400
    batch = asgi.post("/score_batch", json={"customer_ids": active[:5]}, headers=auth)
    assert [r["customer_id"] for r in batch.json()] == active[:5]
    assert batch.json()[0] == ok.json()
    mixed = asgi.post("/score_batch", json={"customer_ids": [active[0], "C-x"]}, headers=auth)
    assert mixed.status_code == 404 and "C-x" in mixed.json()["error"]
    wrong = asgi.post("/score_batch", json={"customer_ids": "C1"}, headers=auth)
    assert wrong.status_code == 400 and "customer_ids" in wrong.json()["error"]
    assert asgi.post("/score_batch", json={"customer_ids": []}, headers=auth).status_code == 400
    big = asgi.post("/score_batch", json={"customer_ids": active[:21]}, headers=auth)
    assert big.status_code == 413 and "limit of 20" in big.json()["error"]
    lead = asgi.post("/score_lead", json={"lead_id": "L1", "customer_id": "C1"}, headers=auth)
    assert lead.status_code == 400
    assert asgi.post("/score_lead", json={"lead_id": "L1"}, headers=auth).status_code == 503
    assert asgi.post("/score_lead", json={"lead_id": 7}, headers=auth).status_code == 400
    models = asgi.get("/models", headers=auth).json()
    assert models["ready"] and {m["name"] for m in models["models"] if m["loaded"]} == {
        "churn",
        "clv",
    }
    spec = asgi.get("/docs.json").json()
    for path in ("/score", "/score_lead", "/score_batch", "/models"):
        assert path in spec["paths"], path
    assert "CustomerScores" in str(spec["components"])
    body = spec["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]
    assert "customer_id" in body["schema"]["properties"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_server_serves_and_hot_swaps(served_home):
    import httpx

    home, uri, _ = served_home
    active, _ = _ids(home)
    port = _free_port()
    env = {
        **os.environ,
        "CLV_HOME": str(home),
        "MLFLOW_TRACKING_URI": uri,
        "CLV_POLL_SECONDS": "1",
        "BENTOML_DO_NOT_TRACK": "True",
    }
    env.pop("CLV_API_KEY", None)
    clv = Path(sys.executable).with_name("clv")
    server = subprocess.Popen(
        [str(clv), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    client = MlflowClient(uri, registry_uri=uri)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, "server exited"
            time.sleep(0.5)
        else:
            pytest.fail("server never became ready")
        first = httpx.post(f"{base}/score", json={"customer_id": active[1]}).json()
        assert first["churn"]["version"] == "1"
        client.set_registered_model_alias("churn", "champion", "2")
        deadline = time.time() + 60
        version = "1"
        while time.time() < deadline and version != "2":
            time.sleep(0.5)
            version = httpx.post(f"{base}/score", json={"customer_id": active[1]}).json()["churn"][
                "version"
            ]
        assert version == "2"
        assert httpx.get(f"{base}/metrics").status_code == 200
    finally:
        client.set_registered_model_alias("churn", "champion", "1")
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
