"""Training sets: population x cutoffs -> labels, point-in-time features from Feast, and the
time-based split (train on earlier cutoffs, validate on a later one, test on the latest fully
observed one)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.store import historical_matrix
from training.labels import LABELS, POPULATIONS, RawTables, table_labels
from training.specs import ModelSpec


class DatasetError(ValueError):
    """A training set that cannot be used (empty, one class, too short a history)."""


@dataclass(frozen=True)
class Split:
    """Cutoffs of each part of a time-based split."""

    train: list[pd.Timestamp]
    valid: list[pd.Timestamp]
    test: list[pd.Timestamp]

    def describe(self) -> str:
        def span(c: list[pd.Timestamp]) -> str:
            return f"{c[0].date()}..{c[-1].date()}" if len(c) > 1 else f"{c[0].date()}"

        return f"train {span(self.train)}, valid {span(self.valid)}, test {span(self.test)}"


def split_cutoffs(spec: ModelSpec, cutoffs: list[pd.Timestamp], as_of: pd.Timestamp) -> Split:
    """Train, validation and test cutoffs whose labels are fully observed by `as_of`, separated
    by the spec's gap so no label window of one part reaches into the next."""
    observed = [
        c for c in sorted(cutoffs) if c + pd.DateOffset(months=spec.horizon_months) <= as_of
    ]
    if not observed:
        raise DatasetError(
            f"model {spec.name}: no cutoff has its {spec.horizon_months}-month label observed "
            f"by {as_of.date()}"
        )
    test = observed[-spec.test_cutoffs :]
    valid_end = test[0] - pd.DateOffset(months=spec.gap)
    valid_pool = [c for c in observed if c <= valid_end and c < test[0]]
    valid = valid_pool[-spec.valid_cutoffs :]
    if not valid:
        raise DatasetError(f"model {spec.name}: history too short for a validation cutoff")
    train_end = valid[0] - pd.DateOffset(months=spec.gap)
    train = [c for c in observed if c <= train_end and c < valid[0]]
    if spec.train_cutoffs:
        train = train[-spec.train_cutoffs :]
    if not train:
        raise DatasetError(f"model {spec.name}: history too short for training cutoffs")
    return Split(train, valid, test)


@dataclass(frozen=True)
class TrainingData:
    """Features, labels and keys of every row, and which part of the split each row is in."""

    spec: ModelSpec
    keys: pd.DataFrame  # entity key column(s), cutoff, breakdown columns
    features: pd.DataFrame  # float64, the feature service's columns in order
    label: np.ndarray
    part: np.ndarray  # "train" | "valid" | "test"
    split: Split

    def rows(self, part: str) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
        mask = self.part == part
        return self.features[mask], self.label[mask], self.keys[mask].reset_index(drop=True)

    @property
    def fingerprint(self) -> str:
        """Hash of features, labels and keys: the same data gives the same study and tags."""
        digest = hashlib.sha256()
        digest.update(pd.util.hash_pandas_object(self.features, index=False).to_numpy().tobytes())
        digest.update(self.label.tobytes())
        digest.update(pd.util.hash_pandas_object(self.keys, index=False).to_numpy().tobytes())
        return digest.hexdigest()


def key_columns(spec: ModelSpec) -> list[str]:
    """Entity join keys of a spec's feature service."""
    return ["lead_id", "customer_id"] if spec.entity == "dormant" else ["customer_id"]


def label_rows(spec: ModelSpec, raw: RawTables, cutoffs: list[pd.Timestamp]) -> pd.DataFrame:
    """Population and labels of a spec at the given cutoffs (pure)."""
    if spec.label == "table":
        assert spec.label_table is not None
        return table_labels(str(spec.label_table), cutoffs)
    population = POPULATIONS[spec.population](raw, cutoffs)
    if population.empty:
        raise DatasetError(f"model {spec.name}: the population is empty at every cutoff")
    return LABELS[spec.label](raw, population, spec.horizon_months)


def build_training_data(
    spec: ModelSpec,
    raw: RawTables,
    store: Any,
    cutoffs: list[pd.Timestamp],
    as_of: pd.Timestamp,
) -> TrainingData:
    """Labels for the split's cutoffs, features through Feast's point-in-time join."""
    split = split_cutoffs(spec, cutoffs, as_of)
    wanted = split.train + split.valid + split.test
    rows = label_rows(spec, raw, wanted).reset_index(drop=True)
    part = np.select(
        [rows["cutoff"].isin(split.train), rows["cutoff"].isin(split.valid)],
        ["train", "valid"],
        "test",
    )
    for name in ("train", "valid", "test"):
        labels = rows.loc[part == name, "label"]
        if labels.empty:
            raise DatasetError(f"model {spec.name}: no {name} rows (population empty)")
        if spec.objective == "binary" and labels.nunique() < 2:
            raise DatasetError(
                f"model {spec.name}: the {name} label has a single class ({labels.iloc[0]:g})"
            )
    keys = key_columns(spec)
    entity = rows[keys].assign(event_timestamp=rows["cutoff"])
    _, matrix = historical_matrix(store, spec.feature_service, entity)
    return TrainingData(
        spec=spec,
        keys=rows.drop(columns=["label"]),
        features=matrix,
        label=rows["label"].to_numpy(float),
        part=part,
        split=split,
    )
