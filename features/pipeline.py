"""`clv features build`: raw tables in, validated, per-cutoff feature tables out."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.columns import DIRECTORY_VIEWS, VIEW_COLUMNS
from features.raw_schema import RAW_SCHEMA
from features.store import built_cutoffs, write_feature_tables
from features.transforms import build_feature_tables, directories, monthly_cutoffs
from features.validation import RawDataError, validate_raw

log = logging.getLogger(__name__)


def read_raw(raw_dir: Path) -> dict[str, pd.DataFrame]:
    """Every table of the raw contract from `raw_dir`; a missing or unreadable file is named."""
    if not raw_dir.exists():
        raise FileNotFoundError(f"{raw_dir} does not exist; run `clv simulate` first")
    tables = {}
    for name in RAW_SCHEMA:
        path = raw_dir / f"{name}.parquet"
        if not path.exists():
            raise RawDataError(f"raw table {name} is missing ({path})")
        try:
            tables[name] = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise RawDataError(f"raw table {name} cannot be read ({path}): {exc}") from exc
    return tables


@dataclass(frozen=True)
class BuildReport:
    """What a build did."""

    as_of: pd.Timestamp
    cutoffs_built: list[pd.Timestamp]
    cutoffs_total: int
    rows: dict[str, int]
    seconds: float

    def describe(self) -> str:
        if not self.cutoffs_built:
            return f"feature tables already up to date to {self.as_of.date()}"
        first, last = self.cutoffs_built[0].date(), self.cutoffs_built[-1].date()
        rows = ", ".join(f"{view} {n:,}" for view, n in self.rows.items())
        return (
            f"built {len(self.cutoffs_built)} of {self.cutoffs_total} cutoffs ({first} to {last})"
            f" in {self.seconds:.1f} s: {rows}"
        )


def history_cutoffs(raw: dict[str, pd.DataFrame], end: pd.Timestamp) -> list[pd.Timestamp]:
    """Monthly cutoffs from the month after the first signup or lead to the end of history."""
    first = min(raw["customers"]["signup_date"].min(), raw["leads"]["created_at"].min())
    return monthly_cutoffs(first, end)


def stale_views(features_dir: Path) -> list[str]:
    """Per-cutoff views whose files on disk hold other columns than the code defines (the
    feature definitions changed since they were built)."""
    import pyarrow.parquet as pq

    stale = []
    for view, (key, ints, floats) in VIEW_COLUMNS.items():
        if view in DIRECTORY_VIEWS:
            continue
        files = sorted((features_dir / view).glob("*.parquet"))
        if files and set(pq.read_schema(files[-1]).names) != {
            key,
            "event_timestamp",
            *ints,
            *floats,
        }:
            stale.append(view)
    return stale


def build_features(
    raw_dir: Path,
    features_dir: Path,
    rebuild: bool = False,
    now: pd.Timestamp | None = None,
) -> BuildReport:
    """Validate the raw tables, then compute and write the cutoffs not built yet (all of them
    with `rebuild`). Nothing is written when validation fails."""
    started = time.perf_counter()
    raw = read_raw(raw_dir)
    end = validate_raw(raw, now or pd.Timestamp.now())
    cutoffs = history_cutoffs(raw, end)
    stale = stale_views(features_dir)
    if stale and not rebuild:
        log.info("feature definitions of %s changed since the last build; rebuilding every "
                 "cutoff", ", ".join(stale))  # fmt: skip
        rebuild = True
    done = set() if rebuild else set(built_cutoffs(features_dir))
    todo = [c for c in cutoffs if c not in done]
    tables = build_feature_tables(raw, todo)
    write_feature_tables(tables, directories(raw, end), features_dir, replace=rebuild)
    rows = {view: sum(len(f) for f in by.values()) for view, by in tables.items()}
    report = BuildReport(end, todo, len(cutoffs), rows, time.perf_counter() - started)
    log.info(report.describe())
    return report
