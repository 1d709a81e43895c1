"""Simulator benchmark: time and peak memory of simulating and writing a world, by scale.

Targets (from the issue): the default size (scale 1) in under 30 s, scale 10 in under
5 minutes, and cost that grows linearly with scale. Each scale runs in its own process so its
peak RSS is its own.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Measurement, peak_rss_mb, run_callable, table

MONTHS = 36
SEED = 42
SCALES = (0.1, 1.0, 10.0)
QUICK_SCALES = (0.1, 1.0)
TARGET_SECONDS = {1.0: 30.0, 10.0: 300.0}
# Linear growth means a 10x scale costs about 10x; allow 20% for noise and fixed costs.
IDEAL_RATIO = 10.0
MAX_RATIO = 12.0


def import_floor() -> dict[str, Any]:
    """Child: import what `measure` imports and nothing else (the memory floor)."""
    import pyarrow.parquet  # noqa: F401  (to_parquet imports it lazily)

    import simulator.io  # noqa: F401
    import simulator.world  # noqa: F401

    return {}


def measure(scale: float, months: int = MONTHS, seed: int = SEED) -> dict[str, Any]:
    """Child: simulate one world and write it to a temporary folder, timing both."""
    from simulator.io import write_world
    from simulator.world import simulate

    start = time.perf_counter()
    world = simulate(months=months, scale=scale, seed=seed)
    simulate_seconds = time.perf_counter() - start
    rss_after_simulate = peak_rss_mb()
    customers = world.raw["customers"]
    with tempfile.TemporaryDirectory(prefix="bench-simulator-") as tmp:
        start = time.perf_counter()
        write_world(world, Path(tmp) / "raw", Path(tmp) / "truth")
        write_seconds = time.perf_counter() - start
        disk_bytes = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    return {
        "simulate_seconds": simulate_seconds,
        "write_seconds": write_seconds,
        "peak_rss_after_simulate_mb": rss_after_simulate,
        "raw_rows": int(sum(len(frame) for frame in world.raw.values())),
        "truth_rows": int(sum(len(frame) for frame in world.truth.values())),
        "rows_by_table": {name: len(frame) for name, frame in world.raw.items()},
        "customers": len(customers),
        "active_customers": int((customers["status"] == "active").sum()),
        "leads": len(world.raw["leads"]),
        "disk_mb": disk_bytes / 1024**2,
    }


def _row(scale: float, run: Measurement) -> dict[str, Any]:
    r = run.result
    work = r["simulate_seconds"] + r["write_seconds"]
    return {
        "scale": scale,
        **r,
        "work_seconds": work,
        "process_seconds": run.process_seconds,
        "peak_rss_mb": run.peak_rss_mb,
        "seconds_per_1k_active": work / (r["active_customers"] / 1000)
        if r["active_customers"]
        else None,
    }


def _ratio(rows: dict[float, dict[str, Any]], key: str, floor: float = 0.0) -> float | None:
    if 10.0 not in rows or 1.0 not in rows:
        return None
    return (rows[10.0][key] - floor) / (rows[1.0][key] - floor)


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every scale in a fresh process; return per-scale rows, checks and tables."""
    scales = QUICK_SCALES if args.quick else SCALES
    floor = run_callable(import_floor).peak_rss_mb
    print(f"import floor: {floor:.0f} MB peak RSS", flush=True)
    rows: dict[float, dict[str, Any]] = {}
    for scale in scales:
        print(f"scale {scale:g}: simulating {MONTHS} months ...", flush=True)
        rows[scale] = _row(scale, run_callable(measure, scale=scale))
        print(
            f"scale {scale:g}: {rows[scale]['process_seconds']:.1f} s, "
            f"{rows[scale]['peak_rss_mb']:.0f} MB",
            flush=True,
        )

    scale_table = table(
        f"Simulator: simulate(months={MONTHS}, seed={SEED}) + write_world, "
        "one fresh process per scale",
        [
            "scale",
            "simulate s",
            "write s",
            "work s",
            "process s",
            "peak RSS MB",
            "RSS after sim MB",
            "raw rows",
            "active cust",
            "s / 1k active",
        ],
        [
            [
                f"{scale:g}",
                r["simulate_seconds"],
                r["write_seconds"],
                r["work_seconds"],
                r["process_seconds"],
                r["peak_rss_mb"],
                r["peak_rss_after_simulate_mb"],
                r["raw_rows"],
                r["active_customers"],
                r["seconds_per_1k_active"],
            ]
            for scale, r in rows.items()
        ],
    )

    def seconds(scale: float) -> float | None:
        return rows[scale]["process_seconds"] if scale in rows else None

    time_ratio = _ratio(rows, "work_seconds")
    memory_ratio = _ratio(rows, "peak_rss_mb")
    memory_net_ratio = _ratio(rows, "peak_rss_mb", floor)
    rows_ratio = _ratio(rows, "raw_rows")
    ratio_target = f"~{IDEAL_RATIO:g} (<= {MAX_RATIO:g})"
    check_columns = ["check", "measured", "target", "met"]
    checks = [
        ["scale 1 end-to-end s", seconds(1.0), "< 30", _at_most(seconds(1.0), 30.0)],
        ["scale 10 end-to-end s", seconds(10.0), "< 300", _at_most(seconds(10.0), 300.0)],
        ["time(10)/time(1)", time_ratio, ratio_target, _at_most(time_ratio, MAX_RATIO)],
        ["memory(10)/memory(1)", memory_ratio, ratio_target, _at_most(memory_ratio, MAX_RATIO)],
        [
            f"same, above {floor:.0f} MB import floor",
            memory_net_ratio,
            ratio_target,
            _at_most(memory_net_ratio, MAX_RATIO),
        ],
        ["rows(10)/rows(1) (reference)", rows_ratio, f"~{IDEAL_RATIO:g}", None],
    ]
    check_table = table(
        "Simulator targets (end-to-end = whole process; ratios use simulate + write)",
        check_columns,
        checks,
    )
    return {
        "months": MONTHS,
        "seed": SEED,
        "import_floor_rss_mb": floor,
        "scales": list(rows.values()),
        "checks": [dict(zip(check_columns, c, strict=True)) for c in checks],
        "tables": [scale_table, check_table],
    }
