"""Population stability index (pure): how far a feature's or a score's distribution moved."""

from __future__ import annotations

import numpy as np
import pandas as pd

BINS = 10
EPSILON = 1e-4


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = BINS) -> float:
    """PSI of `actual` against `expected`, on the expected distribution's quantile bins
    (missing values form their own bin). Rule of thumb: < 0.1 stable, > 0.25 shifted."""
    expected = np.asarray(expected, dtype=float)
    actual = np.asarray(actual, dtype=float)
    shares_e: list[float] = []
    shares_a: list[float] = []
    for values, shares in ((expected, shares_e), (actual, shares_a)):
        shares.append(np.isnan(values).mean() if len(values) else 0.0)
    finite = expected[~np.isnan(expected)]
    if len(finite) == 0:
        return 0.0
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)))
    inner = edges[1:-1]
    for values, shares in ((expected, shares_e), (actual, shares_a)):
        present = values[~np.isnan(values)]
        counts = np.bincount(
            np.searchsorted(inner, present, side="right"), minlength=len(inner) + 1
        )
        total = max(len(values), 1)
        shares.extend(counts / total)
    e = np.clip(np.asarray(shares_e), EPSILON, None)
    a = np.clip(np.asarray(shares_a), EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def drift_table(
    reference: pd.DataFrame, current: pd.DataFrame, skip: frozenset[str] = frozenset()
) -> pd.DataFrame:
    """PSI per shared numeric column not in `skip`, largest first."""
    rows = [
        {"feature": c, "psi": psi(reference[c].to_numpy(float), current[c].to_numpy(float))}
        for c in reference.columns
        if c in current.columns
        and c not in skip
        and pd.api.types.is_numeric_dtype(reference[c])
        and pd.api.types.is_numeric_dtype(current[c])
    ]
    table = pd.DataFrame(rows, columns=["feature", "psi"])
    return table.sort_values("psi", ascending=False).reset_index(drop=True)
