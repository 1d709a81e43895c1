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
