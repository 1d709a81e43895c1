"""The `clv` command line: help everywhere, one-line errors, nothing overwritten."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CLV = [sys.executable, "-m", "clv"]


def run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"CLV_HOME": str(home), "PATH": "/usr/bin:/bin"}
    return subprocess.run([*CLV, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("command", [[], ["simulate"], ["demo"]])
def test_help_everywhere(command: list[str], tmp_path: Path):
    result = run(*command, "--help", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_simulate_writes_then_refuses_to_overwrite(tmp_path: Path):
    home = tmp_path / "var"
    first = run("simulate", "--scale", "0.02", "--seed", "5", home=home)
    assert first.returncode == 0, first.stderr
    assert "active_customers" in first.stdout
    orders = home / "raw" / "orders.parquet"
    stamp = orders.read_bytes()

    again = run("simulate", "--scale", "0.02", "--seed", "6", home=home)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [
        f"error: {home / 'raw'} already holds data; pass --force to replace it"
    ]
    assert orders.read_bytes() == stamp

    forced = run("simulate", "--scale", "0.02", "--seed", "6", "--force", home=home)
    assert forced.returncode == 0, forced.stderr
    assert orders.read_bytes() != stamp

    advanced = run("simulate", "--advance", "1", home=home)
    assert advanced.returncode == 0, advanced.stderr
    assert "2027-01-01" in advanced.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["simulate", "--scale", "0"], 1, "error: --scale must be positive"),
        (["simulate", "--scale", "-2"], 1, "error: --scale must be positive"),
        (["simulate", "--months", "3"], 1, "error: --months must be at least 13"),
        (["simulate", "--bogus"], 2, "No such option"),
        (["simulate", "--advance", "1"], 1, "has no _manifest.json"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(args, code, message, tmp_path: Path):
    result = run(*args, home=tmp_path / "var")
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var" / "raw" / "orders.parquet").exists()


def test_bad_setting_is_named(tmp_path: Path):
    env = {"CLV_HOME": str(tmp_path), "CLV_SCALE": "lots", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([*CLV, "simulate"], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: setting scale:")


def test_demo_runs_twice_without_duplicating(tmp_path: Path):
    env = {
        "CLV_HOME": str(tmp_path / "var"),
        "CLV_SCALE": "0.05",
        "CLV_DEMO_TRIALS": "2",
        "PATH": "/usr/bin:/bin",
        "FEAST_USAGE": "False",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "BENTOML_DO_NOT_TRACK": "True",
    }
    first = subprocess.run([*CLV, "demo"], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    size = (tmp_path / "var" / "raw" / "orders.parquet").stat().st_size
    assert "POST /score" in first.stdout and "6/6 summary" in first.stdout
    # The summary gives each classifier its expected gap to the oracle, +- the label noise.
    assert re.search(r"^churn .* \d\.\d{3}\+-\d\.\d{3} ", first.stdout, re.MULTILINE)
    second = subprocess.run([*CLV, "demo"], capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr
    assert "reusing it" in second.stdout
    assert (tmp_path / "var" / "raw" / "orders.parquet").stat().st_size == size


def test_the_training_table_shows_the_ceiling_and_the_expected_gap():
    from clv.workflows import training_table
    from training.job import TrainResult

    churn_metrics = {
        "roc_auc": 0.850,
        "oracle_roc_auc": 0.864,
        "ceiling_roc_auc": 0.857,
        "expected_gap_roc_auc": 0.0142,
        "gap_noise_sd_roc_auc": 0.0025,
    }
    churn = TrainResult("churn", "3", 12, churn_metrics, 40.0, "run-1")
    clv = TrainResult("clv", "2", 12, {"mae": 266.7, "oracle_mae": 263.3}, 60.0, "run-2")
    lines = training_table([churn, clv]).splitlines()
    row = next(line for line in lines if line.startswith("churn"))
    assert row.split()[3:8] == ["0.8500", "0.8640", "0.0140", "0.8570", "0.014+-0.003"]
    row = next(line for line in lines if line.startswith("clv"))
    assert row.split()[6:8] == ["-", "-"]  # no ceiling, no expected gap for a regression
    assert lines[-1].startswith("(expected gap:")
