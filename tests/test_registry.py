"""Model registry: the pure gate rule by rule, then promotion, refusal, forcing, staging,
rollback, the audit trail and the `clv registry` commands against a real SQLite MLflow store.

One module-scoped store holds three churn versions: v1, v2 (v1's model registered again) and
v3, trained on shuffled labels and tested on the true ones. Each test works on its
own copy of that store, so tests never see each other's aliases.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from clv.registry_cli import registry_app
from clv.settings import Settings
from registry import (
    AuditEntry,
    Compatibility,
    Evaluation,
    IncompatibleVersionError,
    compare,
    decide,
    history,
    overview,
    promote,
    rollback,
    stage,
)
from registry.operations import metrics_on, overlap_note
from registry.records import VersionInfo
from registry.store import RegistryStore
from training.specs import SPECS, Gate

CHURN = SPECS["churn"]
# The 5%-scale test world has ~500 test rows, too few for the production ECE ceiling (0.03)
# to be more than noise; the rules are the same, only the thresholds are relaxed.
RELAXED = CHURN.model_copy(update={"gate": Gate(primary_floor=0.65, max_ece=0.08)})
SERVICE = ("a", "b", "c")
FIT = Compatibility("churn_v1", SERVICE, SERVICE)


def ev(version: str = "2", rows_of: str = "2", **metrics: float) -> Evaluation:
    return Evaluation(version, metrics, rows=10_413, rows_of=rows_of, features=SERVICE)


# ---- the gate, rule by rule (pure) -------------------------------------------------------
def test_first_model_must_pass_the_floors():
    ok = decide(CHURN, ev(roc_auc=0.842, ece=0.01), None, FIT)
    assert ok.promote and ok.version == "2"
    assert "pass: roc_auc 0.842 >= floor 0.7 on 10,413 rows" in ok.reasons
    assert "note: no champion yet: a first model has to pass the floors only" in ok.reasons
    low = decide(CHURN, ev(roc_auc=0.65, ece=0.01), None, FIT)
    assert not low.promote
    assert low.failures == ["roc_auc 0.650 < floor 0.7 on 10,413 rows"]


def test_calibration_ceiling():
    bad = decide(CHURN, ev(roc_auc=0.9, ece=0.051), None, FIT)
    assert bad.failures == ["ece 0.051 > ceiling 0.03 on 10,413 rows"]
    missing = decide(CHURN, ev(roc_auc=0.9), None, FIT)
    assert missing.failures == ["ece (calibration) is missing or not a number"]


def test_non_inferiority_is_absolute_for_auc():
    champion = ev("1", rows_of="2", roc_auc=0.838, ece=0.01)
    within = decide(CHURN, ev(roc_auc=0.834, ece=0.01), champion, FIT)
    assert within.promote
    assert (
        "pass: roc_auc 0.834 vs champion v1 0.838 on the same 10,413 rows: "
        "worse by 0.004, within margin 0.005"
    ) in within.reasons
    beyond = decide(CHURN, ev(roc_auc=0.83, ece=0.01), champion, FIT)
    assert beyond.failures == [
        "roc_auc 0.830 vs champion v1 0.838 on the same 10,413 rows: "
        "worse by 0.008, beyond margin 0.005"
    ]
    better = decide(CHURN, ev(roc_auc=0.85, ece=0.01), champion, FIT)
    assert better.promote and any("better by 0.012" in r for r in better.reasons)


def test_non_inferiority_is_relative_for_mae_and_clv_must_beat_the_baseline():
    clv = SPECS["clv"]  # margin 1% relative, beat_baseline
    fit = Compatibility("clv_v1", SERVICE, SERVICE)
    champion = ev("1", mae=800.0, baseline_mae=1000.0)
    within = decide(clv, ev(mae=806.0, baseline_mae=1000.0), champion, fit)
    assert within.promote
    assert "pass: mae 806.0 < naive baseline 1,000.0" in within.reasons
    assert any("worse by 0.8%, within margin 1.0%" in r for r in within.reasons)
    beyond = decide(clv, ev(mae=820.0, baseline_mae=1000.0), champion, fit)
    assert beyond.failures == [
        "mae 820.0 vs champion v1 800.0 on the same 10,413 rows: worse by 2.5%, beyond margin 1.0%"
    ]
    naive_wins = decide(clv, ev(mae=1001.0, baseline_mae=1000.0), None, fit)
    assert naive_wins.failures == ["mae 1,001.0 >= naive baseline 1,000.0"]
    capped = clv.model_copy(update={"gate": Gate(primary_floor=900.0, max_ece=None)})
    assert decide(capped, ev(mae=950.0), None, fit).failures == [
        "mae 950.0 > ceiling 900 on 10,413 rows"
    ]


def test_incompatible_candidates_are_refused_on_compatibility_alone():
    other_service = decide(
        CHURN, ev(roc_auc=0.9, ece=0.0), None, Compatibility("churn_v2", SERVICE, SERVICE)
    )
    assert not other_service.promote and not other_service.compatible
    assert other_service.failures == ["feature service churn_v2 is not the spec's churn_v1"]
    columns = Compatibility("churn_v1", ("a", "b", "z"), SERVICE)
    wrong = decide(CHURN, ev(roc_auc=0.9, ece=0.0), None, columns)
    assert wrong.failures == ["input signature differs from churn_v1: missing c; extra z"]
    assert len(wrong.reasons) == 2  # no metric lines for a model that cannot be served
    order = Compatibility("churn_v1", ("b", "a", "c"), SERVICE)
    assert decide(CHURN, ev(roc_auc=0.9, ece=0.0), None, order).failures == [
        "input signature differs from churn_v1: same columns in a different order"
    ]


def test_champion_caveats_are_reported():
    stale = Evaluation(
        "1", {"roc_auc": 0.8}, rows=900, rows_of="1", features=("a", "b", "old"),
        rescored=False, notes=("champion v1 needs 1 column(s) absent ...",),
    )  # fmt: skip
    decision = decide(CHURN, ev(roc_auc=0.81, ece=0.01), stale, FIT)
    assert decision.promote
    assert "note: champion v1 needs 1 column(s) absent ..." in decision.reasons
    assert any(
        "different feature list" in r and "new c; dropped old" in r for r in decision.reasons
    )
    assert any(
        "recorded value on its own 900 rows, not the candidate's 10,413" in r
        for r in decision.reasons
    )
    nan = decide(CHURN, ev(roc_auc=0.81, ece=0.01), ev("1", roc_auc=float("nan")), FIT)
    assert nan.failures and "cannot compare a missing value" in nan.failures[0]


def test_metrics_on_the_rows_include_the_naive_baseline_for_clv():
    rows = pd.DataFrame({"revenue_12m": [100.0, 0.0, 50.0]})
    y = np.array([120.0, 10.0, 50.0])
    metrics = metrics_on(SPECS["clv"], y, np.array([110.0, 5.0, 50.0]), rows)
    assert metrics["mae"] == pytest.approx(5.0) and metrics["baseline_mae"] == pytest.approx(10.0)


def test_overlapping_training_window_is_a_caveat():
    def info(version: str, **tags: str) -> VersionInfo:
        return VersionInfo("churn", version, "r", "s", tags, (), pd.Timestamp(0).to_pydatetime())

    newer = info("3", training_window="2024-01-01..2026-07-01")
    candidate = info("2", test_window="2026-09-01..2026-09-01")
    note = overlap_note(CHURN, newer, candidate)
    assert note and "up to 2026-07-01" in note and "optimistic" in note
    older = info("1", training_window="2024-01-01..2026-03-01")
    assert overlap_note(CHURN, older, candidate) is None


def test_audit_entries_round_trip():
    entry = AuditEntry("churn", "2", "force", ["fail: x", "note: y"], "1", "2", "ana", "drill")
    assert AuditEntry.from_params(entry.to_params()) == entry
    assert json.loads(entry.to_json())["reasons"] == ["fail: x", "note: y"]
    with pytest.raises(ValueError, match="unknown action 'delete'"):
        AuditEntry.from_params({**entry.to_params(), "action": "delete"})


# ---- against a real MLflow store -------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, feast_home) -> Path:
    """A folder with mlflow.db (churn v1 = v2, v3 degraded), its artifacts and Optuna study."""
    from features.pipeline import read_raw
    from features.store import built_cutoffs
    from training import labels
    from training.dataset import split_cutoffs
    from training.job import JobConfig, train
    from training.specs import load_specs

    home, _, store, report = feast_home
    root = tmp_path_factory.mktemp("registry")
    config = JobConfig(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifacts_dir=root / "artifacts",
        study_storage=f"sqlite:///{root / 'optuna.db'}",
        truth_dir=home / "truth",
        trials=2,
        seed=1,
        git_revision="test",
    )
    raw = read_raw(home / "raw")
    cutoffs = built_cutoffs(home / "features")
    args = (raw, store, cutoffs, report.as_of)
    assert train(CHURN, config, *args).version == "1"
    # v2: v1's logged model registered again (what a retrain on unchanged data gives)
    client = MlflowClient(config.tracking_uri, registry_uri=config.tracking_uri)
    first = client.get_model_version("churn", "1")
    again = client.create_model_version(
        "churn", str(first.source), run_id=first.run_id, tags=first.tags, model_id=first.model_id
    )
    assert str(again.version) == "2"

    # v3: the same features and test rows, but trained and calibrated on shuffled labels
    table = labels.churn(raw, labels.active_customers(raw, cutoffs), CHURN.horizon_months)
    table = table[["customer_id", "cutoff", "label"]].copy()
    test = table["cutoff"].isin(split_cutoffs(CHURN, cutoffs, report.as_of).test).to_numpy()
    shuffled = np.random.default_rng(0).permutation(table.loc[~test, "label"].to_numpy())
    table.loc[~test, "label"] = shuffled
    table.to_parquet(root / "shuffled.parquet")
    (root / "specs.toml").write_text(
        f"""
[models.churn]
description = "churn trained on shuffled labels"
feature_service = "churn_v1"
population = "label_table"
label = "table"
label_table = "{root / "shuffled.parquet"}"
horizon_months = 3
gate = {{ primary_floor = 0.7 }}
"""
    )
    degraded = load_specs(root / "specs.toml")["churn"]
    assert train(degraded, config, *args).version == "3"
    return root


@pytest.fixture()
def registry(trained: Path, tmp_path: Path) -> RegistryStore:
    """A private copy of the trained store (artifacts are shared read-only)."""
    shutil.copy(trained / "mlflow.db", tmp_path / "mlflow.db")
    return RegistryStore(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlartifacts")


def snapshot(store: RegistryStore) -> tuple[dict[str, str], list[dict[str, str]], int]:
    """Aliases, every version's tags and the number of audit entries."""
    return (
        store.aliases("churn"),
        [v.tags for v in store.versions("churn")],
        len(store.audit("churn")),
    )


def test_promote_then_an_equal_candidate_then_roll_back(registry: RegistryStore):
    first = promote(registry, RELAXED, "1", by="ana")
    assert first.promote and registry.aliases("churn") == {"champion": "1"}
    second = promote(registry, RELAXED)  # the latest version is v3: name v2 explicitly
    assert not second.promote and second.version == "3"
    equal = promote(registry, RELAXED, "2", by="ana")
    assert equal.promote
    line = next(r for r in equal.reasons if "vs champion v1" in r)
    assert line.startswith("pass: roc_auc") and "on the same" in line and "better by 0.000" in line
    assert registry.aliases("churn") == {"champion": "2", "previous": "1"}
    tags = registry.version("churn", "2").tags
    assert tags["gate.decision"] == "promoted" and tags["gate.by"] == "ana"
    assert "vs champion v1" in tags["gate.reasons"]

    entry = rollback(registry, "churn", by="ben", reason="alerts on v2")
    assert (entry.champion_before, entry.champion_after) == ("2", "1")
    assert registry.aliases("churn") == {"champion": "1"}
    assert registry.version("churn", "2").tags["gate.decision"] == "rolled_back"
    before = snapshot(registry)
    with pytest.raises(LookupError, match="model churn has no previous champion"):
        rollback(registry, "churn")
    assert snapshot(registry) == before

    trail = history(registry, "churn")
    assert [(e.action, e.version) for e in trail] == [
        ("promote", "1"), ("refuse", "3"), ("promote", "2"), ("rollback", "1"),
    ]  # fmt: skip
    assert trail[3].note == "alerts on v2" and trail[3].by == "ben"
    assert [e.at for e in trail] == sorted(e.at for e in trail)


def test_degraded_candidate_is_refused_on_the_same_rows_and_the_champion_stays(
    registry: RegistryStore,
):
    promote(registry, RELAXED, "1")
    decision = promote(registry, RELAXED, "3", by="retrain")
    assert not decision.promote
    floor = next(f for f in decision.failures if "floor" in f)
    versus = next(f for f in decision.failures if "vs champion v1" in f)
    assert floor.startswith("roc_auc 0.") and "< floor 0.65" in floor
    rows = int(float(registry.version("churn", "3").tags["metric.rows"]))
    assert f"on the same {rows:,} rows" in versus and "beyond margin 0.005" in versus
    assert registry.aliases("churn") == {"champion": "1"}
    assert registry.version("churn", "3").tags["gate.decision"] == "refused"
    assert history(registry, "churn")[-1].champion_after == "1"


def test_a_better_candidate_replaces_a_forced_champion(registry: RegistryStore):
    before = snapshot(registry)
    for reason in (None, "  "):
        with pytest.raises(ValueError, match="forced promotion needs a non-empty reason"):
            promote(registry, RELAXED, "3", force=True, reason=reason)
    assert snapshot(registry) == before
    forced = promote(registry, RELAXED, "3", force=True, reason="incident drill", by="ana")
    assert forced.promote and forced.forced and forced.failures  # the gate said no
    assert forced.reasons[-1] == "note: forced by ana: incident drill"
    assert registry.version("churn", "3").tags["gate.note"] == "incident drill"
    better = promote(registry, RELAXED, "1")
    versus = next(r for r in better.reasons if "vs champion v3" in r)
    assert better.promote and "better by" in versus
    assert registry.aliases("churn") == {"champion": "1", "previous": "3"}
    assert [e.action for e in history(registry, "churn")] == ["force", "promote"]


def test_a_failed_champion_move_leaves_the_registry_as_it_was(
    registry: RegistryStore, monkeypatch: pytest.MonkeyPatch
):
    promote(registry, RELAXED, "1")
    promote(registry, RELAXED, "2")  # champion 2, previous 1
    before = snapshot(registry)
    real = registry.set_alias

    def failing(model: str, alias: str, version: str) -> None:
        if alias == "champion":
            raise RuntimeError("tracking server went away")
        real(model, alias, version)

    monkeypatch.setattr(registry, "set_alias", failing)
    with pytest.raises(RuntimeError, match="went away"):
        promote(registry, RELAXED, "3", force=True, reason="test")
    monkeypatch.undo()
    assert registry.aliases("churn") == {"champion": "2", "previous": "1"}
    assert snapshot(registry) == before  # no tags, no audit entry for the failed promotion


def test_bad_input_changes_nothing(registry: RegistryStore):
    promote(registry, RELAXED, "1")
    before = snapshot(registry)
    with pytest.raises(LookupError, match=r"model churn has no version '9'; its versions: 1, 2, 3"):
        promote(registry, RELAXED, "9")
    with pytest.raises(LookupError, match="no registered model 'clv'; registered models: churn"):
        promote(registry, SPECS["clv"])
    with pytest.raises(ValueError, match="model churn version 1 is already the champion"):
        promote(registry, RELAXED, "1")
    with pytest.raises(LookupError, match="no registered model 'chrun'"):
        rollback(registry, "chrun")
    elsewhere = RELAXED.model_copy(update={"feature_service": "expansion_v1"})
    with pytest.raises(
        IncompatibleVersionError, match="feature service churn_v1 is not the spec's"
    ):
        promote(registry, elsewhere, "2", force=True, reason="force cannot fix this")
    with pytest.raises(IncompatibleVersionError, match="cannot be served"):
        stage(registry, elsewhere, "2")
    assert snapshot(registry) == before

    # a version whose signature is not its (declared) feature service's columns
    registry.set_tags("churn", "2", {"feature_service": "referral_v1"})
    before = snapshot(registry)
    referral = RELAXED.model_copy(update={"feature_service": "referral_v1"})
    with pytest.raises(IncompatibleVersionError) as caught:
        promote(registry, referral, "2")
    message = str(caught.value)
    assert message.startswith("model churn version 2 cannot be served through referral_v1")
    assert "input signature differs from referral_v1: missing referrals_total" in message
    assert "extra upsell_headroom, add_ons_available" in message and "\n" not in message
    assert snapshot(registry) == before


def test_stage_sets_the_challenger_and_compare_scores_the_same_rows(registry: RegistryStore):
    promote(registry, RELAXED, "1")
    decision = stage(registry, RELAXED, "3")
    assert not decision.promote and decision.reasons[-1].endswith("the gate would refuse it")
    assert registry.aliases("churn") == {"champion": "1", "challenger": "3"}
    stage(registry, RELAXED, "2")
    promote(registry, RELAXED, "2")  # promoting the challenger un-stages it
    assert registry.aliases("churn") == {"champion": "2", "previous": "1"}
    (row,) = overview(registry, SPECS)
    assert row.champion is not None and row.champion.version == "2" and row.versions == 3
    assert row.primary == pytest.approx(float(row.champion.tags["metric.roc_auc"]))
    assert np.isfinite(row.oracle_gap) and row.feature_service == "churn_v1"

    result = compare(registry, RELAXED, ["1", "3"])
    rows = int(float(registry.version("churn", "3").tags["metric.rows"]))
    assert result.rows_of == "3" and result.rows == rows
    assert result.metrics["1"]["roc_auc"] > result.metrics["3"]["roc_auc"] + 0.1
    # v3's own recorded metrics are reproduced by re-scoring it on its logged rows
    recorded = float(registry.version("churn", "3").tags["metric.roc_auc"])
    assert result.metrics["3"]["roc_auc"] == pytest.approx(recorded, abs=1e-5)


# ---- the command line ------------------------------------------------------------------------
@pytest.fixture()
def cli(registry: RegistryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Invoke `clv registry ...` on the test's store (Settings(home=tmp) -> its mlflow.db)."""
    for name in ("MLFLOW_TRACKING_URI", "CLV_MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(home=tmp_path)
    assert settings.tracking_uri == registry.tracking_uri
    specs = tmp_path / "specs.toml"
    specs.write_text(
        '[models.churn]\ndescription = "churn, relaxed gate"\nfeature_service = "churn_v1"\n'
        'label = "churn"\nhorizon_months = 3\ngate = { primary_floor = 0.65, max_ece = 0.08 }\n'
    )
    runner = CliRunner()

    def invoke(*args: str, relaxed: bool = True):
        extra = ["--specs", str(specs)] if relaxed and args[0] in ("promote", "compare") else []
        return runner.invoke(registry_app, [*args, *extra], obj=settings)

    return invoke


@pytest.mark.parametrize("command", ["list", "promote", "rollback", "compare", "history"])
def test_every_registry_command_has_help(command: str):
    result = CliRunner().invoke(registry_app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.stdout


def test_registry_commands(cli, registry: RegistryStore):
    empty = cli("history", "churn")
    assert empty.exit_code == 0 and "no registry decisions" in empty.stdout
    first = cli("promote", "churn", "--version", "1", "--by", "ana")
    assert first.exit_code == 0, first.output
    assert "pass: roc_auc" in first.stdout and "champion (none) -> v1" in first.stdout

    refused = cli("promote", "churn")  # the latest is the degraded v3
    assert refused.exit_code == 3
    assert "fail: roc_auc" in refused.stdout
    summary = refused.stderr.strip().splitlines()[-1]  # after MLflow's download progress bars
    assert re.match(r"churn version 3: refused, \d check\(s\) failed: roc_auc 0\.\d+ <", summary)

    staged = cli("promote", "churn", "--version", "2", "--stage")
    assert staged.exit_code == 0 and "version 2 is now the challenger" in staged.stdout
    listing = cli("list")
    assert listing.exit_code == 0
    (line,) = [row for row in listing.stdout.splitlines() if row.startswith("churn")]
    assert line.split()[:3] == ["churn", "v1", "roc_auc"] and "churn_v1" in line and "v2" in line

    compared = cli("compare", "churn", "1", "3")
    assert compared.exit_code == 0 and "on the" in compared.stdout and "roc_auc" in compared.stdout
    forced = cli("promote", "churn", "--version", "3", "--force", "--reason", "drill")
    assert forced.exit_code == 0 and "champion v1 -> v3, previous v1 (forced)" in forced.stdout
    back = cli("rollback", "churn", "--reason", "drill over")
    assert back.exit_code == 0 and "champion v3 -> v1 (rolled back)" in back.stdout

    trail = cli("history", "churn", "--json")
    actions = [json.loads(line)["action"] for line in trail.stdout.splitlines()]
    assert actions == ["promote", "refuse", "stage", "force", "rollback"]
    readable = cli("history", "churn")
    assert "rollback v1" in readable.stdout and "drill over" in readable.stdout


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (["promote", "chrun"], LookupError, "unknown model 'chrun'; valid models: churn"),
        (["promote", "churn", "--version", "9"], LookupError, "model churn has no version '9'"),
        (["promote", "churn", "--version", "2", "--force"], ValueError, "needs a non-empty reason"),
        (["promote", "churn", "--reason", "x"], ValueError, "--reason goes with --force"),
        (["promote", "churn", "--stage", "--force"], ValueError, "do not combine"),
        (["rollback", "churn"], LookupError, "model churn has no previous champion"),
        (["compare", "churn", "1", "7"], LookupError, "model churn has no version '7'"),
        (["history", "nope"], LookupError, "no registered model 'nope'"),
        (["rollback", "it's"], LookupError, 'no registered model "it\'s"'),
    ],
)
def test_registry_bad_input_is_one_line(cli, registry: RegistryStore, args, error, message):
    before = snapshot(registry)
    result = cli(*args)
    assert result.exit_code == 1 and isinstance(result.exception, error), result.output
    text = str(result.exception.args[0])
    assert message in text and "\n" not in text
    assert snapshot(registry) == before
