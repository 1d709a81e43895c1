"""Checks raw tables against the contract before any feature is computed."""

from __future__ import annotations

import pandas as pd

from features.raw_schema import RAW_SCHEMA, kind_of

EARLIEST = pd.Timestamp("1990-01-01")


class RawDataError(ValueError):
    """Raw input that breaks the contract; the message names the table and column."""


def validate_raw(tables: dict[str, pd.DataFrame], now: pd.Timestamp) -> pd.Timestamp:
    """Raise `RawDataError` on the first problem; return the end of history: the first of the
    month after the latest event, which is the last cutoff features are built for."""
    missing = sorted(set(RAW_SCHEMA) - set(tables))
    if missing:
        raise RawDataError(f"raw table {missing[0]} is missing (expected {missing[0]}.parquet)")
    latest = EARLIEST
    for name, table in RAW_SCHEMA.items():
        frame = tables[name]
        for column, spec in table.columns.items():
            if column not in frame.columns:
                raise RawDataError(f"table {name}: column {column} is missing")
            found = kind_of(frame[column])
            if found != spec.kind:
                raise RawDataError(
                    f"table {name}: column {column} has type {found}, expected {spec.kind}"
                )
            values = frame[column]
            if not spec.nullable and values.isna().any():
                row = int(values.isna().to_numpy().argmax())
                raise RawDataError(f"table {name}: column {column} has a null in row {row}")
            if spec.allowed:
                bad = ~values.dropna().isin(spec.allowed)
                if bad.any():
                    raise RawDataError(
                        f"table {name}: column {column} has value {values.dropna()[bad].iloc[0]!r}"
                        f", expected one of {', '.join(spec.allowed)}"
                    )
            if spec.kind == "datetime":
                dates = values.dropna()
                if dates.dt.tz is not None:
                    dates = dates.dt.tz_convert(None)
                if len(dates) and (dates.min() < EARLIEST or dates.max() > now):
                    bad = dates[(dates < EARLIEST) | (dates > now)].iloc[0]
                    raise RawDataError(
                        f"table {name}: column {column} has date {bad} outside the history "
                        f"({EARLIEST.date()} to {now.date()})"
                    )
                if column == table.date and len(dates):
                    latest = max(latest, dates.max())
            if spec.kind in ("int", "float"):
                numeric = values.dropna()
                if len(numeric) and (numeric < 0).any():
                    raise RawDataError(
                        f"table {name}: column {column} has negative value {numeric.min()}"
                    )
        if table.key:
            dup = frame.duplicated(list(table.key), keep="first")
            if dup.any():
                key = frame.loc[dup, list(table.key)].iloc[0].tolist()
                raise RawDataError(f"table {name}: duplicate {', '.join(table.key)} {key}")
    for name, table in RAW_SCHEMA.items():
        for column, target in table.references.items():
            key = RAW_SCHEMA[target].key[0]
            values = tables[name][column].dropna()
            unknown = ~values.isin(tables[target][key])
            if unknown.any():
                raise RawDataError(
                    f"table {name}: column {column} refers to unknown {target} "
                    f"{values[unknown].iloc[0]!r}"
                )
    return latest.normalize() + pd.offsets.MonthBegin(1)


# Tables whose monthly event counts must not collapse (the others are too sparse to judge).
VOLUME_TABLES = ("orders", "usage_weekly", "marketing_touches", "lifecycle_events")


def check_volume(
    tables: dict[str, pd.DataFrame],
    end: pd.Timestamp,
    previous_rows: dict[str, int] | None = None,
    drop_share: float = 0.5,
) -> list[str]:
    """Problems with freshness and row counts (empty when fine): a table whose latest month
    is empty or holds under `drop_share` of its usual monthly rows, or whose row count fell
    since the previous run (raw tables only grow)."""
    problems = []
    last_month = end - pd.DateOffset(months=1)
    for name in VOLUME_TABLES:
        column = RAW_SCHEMA[name].date
        assert column is not None
        dates = tables[name][column]
        months = dates.dt.to_period("M").value_counts()
        latest = int(months.get(last_month.to_period("M"), 0))
        before = months.drop(last_month.to_period("M"), errors="ignore").sort_index().tail(6)
        usual = float(before.median()) if len(before) else 0.0
        if latest == 0:
            problems.append(f"table {name}: no rows in the latest month ({last_month:%Y-%m})")
        elif usual and latest < drop_share * usual:
            problems.append(
                f"table {name}: {latest:,} rows in {last_month:%Y-%m}, under "
                f"{drop_share:.0%} of the usual {usual:,.0f} a month"
            )
    for name, count in (previous_rows or {}).items():
        now = len(tables.get(name, ()))
        if name in tables and now < count:
            problems.append(f"table {name}: {now:,} rows, fewer than the {count:,} of the last run")
    return problems
