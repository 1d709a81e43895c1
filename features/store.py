"""Thin adapter over Feast: configuration, feature-table files, apply, materialize, and the two
reads the platform makes (point-in-time training sets and online lookups).

This module and `repo.py` are the only ones in `features/` that import Feast.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from features.columns import (
    DIRECTORY_VIEWS,
    ON_DEMAND_FLOAT,
    ON_DEMAND_VIEW,
    VIEW_COLUMNS,
    service_features,
    view_features,
)
from features.on_demand import ON_DEMAND_INPUTS, ratios

log = logging.getLogger(__name__)

REPO_DIR = Path(__file__).parent
YAML_FILE = REPO_DIR / "feature_store.yaml"
SQLITE_STORE_TYPE = "features.online_sqlite.BatchedSqliteOnlineStore"


@dataclass(frozen=True)
class StoreConfig:
    """Where the feature tables live and which engines Feast uses."""

    features_dir: Path
    feast_dir: Path
    online_store: str = "sqlite"  # or "redis"
    redis_url: str = "127.0.0.1:6379"
    registry: str = "file"  # or "sql"
    registry_url: str = ""
    project: str = "techflow"

    def environment(self) -> dict[str, str]:
        """Values of the `${...}` variables of feature_store.yaml, as flow-style YAML."""
        if self.registry == "sql":
            registry = f'{{registry_type: sql, path: "{self.registry_url}", cache_ttl_seconds: 60}}'
        else:
            path = self.feast_dir / "registry.db"
            registry = f'{{registry_type: file, path: "{path}", cache_ttl_seconds: 60}}'
        if self.online_store == "redis":
            online = f'{{type: redis, connection_string: "{self.redis_url}"}}'
        else:
            # Feast's SQLite store with a batched write (features/online_sqlite.py)
            online = f'{{type: {SQLITE_STORE_TYPE}, path: "{self.feast_dir / "online.db"}"}}'
        return {"FEAST_REGISTRY_CONFIG": registry, "FEAST_ONLINE_STORE_CONFIG": online}


_IMPORT_LOCK = threading.Lock()


def _unchecked(target: Any = None, **_: Any) -> Any:
    """typeguard's `@typechecked` as Python's optimized mode makes it: the target, untouched."""
    return target if target is not None else _unchecked


def import_feast() -> None:
    """Import Feast without typeguard's import-time instrumentation.

    Feast decorates its classes with `@typechecked`, which re-parses and recompiles the
    source of every method while Feast is imported: about 80% of `import feast` (measured
    9.7 s of CPU against 1.5 s on this machine), paid by every process that opens the store,
    the service's start-up included. Under `python -O` typeguard makes the decorator a
    no-op; this does the same only while Feast's modules are first imported, and restores
    the decorator afterwards. Feast's own runtime argument checks are all that is lost."""
    if "feast.feature_store" in sys.modules:
        return
    with _IMPORT_LOCK:
        if "feast.feature_store" in sys.modules:
            return
        try:
            import typeguard
        except ImportError:  # a Feast without typeguard has nothing to skip
            import feast.feature_store  # noqa: F401

            return
        original = typeguard.typechecked
        typeguard.typechecked = _unchecked  # type: ignore[assignment]
        try:
            import feast.feature_store  # noqa: F401
        finally:
            typeguard.typechecked = original


def repo_config(config: StoreConfig) -> Any:
    """feature_store.yaml with our values substituted, validated by Feast's own model."""
    import_feast()
    from feast.repo_config import RepoConfig

    text = YAML_FILE.read_text()
    for name, value in config.environment().items():
        text = text.replace("${" + name + "}", value)
    raw = yaml.safe_load(text)
    raw["project"] = config.project
    repo = RepoConfig(**raw)
    repo.repo_path = REPO_DIR
    return repo


def open_store(config: StoreConfig) -> Any:
    """A FeatureStore over the configured engines."""
    import_feast()
    from feast import FeatureStore

    if config.online_store == "sqlite" or config.registry == "file":
        config.feast_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=repo_config(config))


# ---- feature-table files -------------------------------------------------------------------
def cutoff_file(features_dir: Path, view: str, cutoff: pd.Timestamp) -> Path:
    """One parquet file per view and cutoff: the view's folder is its Feast file source."""
    return features_dir / view / f"{cutoff:%Y-%m-%d}.parquet"


def built_cutoffs(features_dir: Path) -> list[pd.Timestamp]:
    """Cutoffs present for every per-cutoff view."""
    sets = []
    for view in VIEW_COLUMNS:
        if view in DIRECTORY_VIEWS:
            continue
        folder = features_dir / view
        stems = {p.stem for p in folder.glob("*.parquet")} if folder.exists() else set()
        sets.append(stems)
    common = set.intersection(*sets) if sets else set()
    return sorted(pd.Timestamp(s) for s in common)


def write_feature_tables(
    tables: dict[str, dict[pd.Timestamp, pd.DataFrame]],
    directories: dict[str, pd.DataFrame],
    features_dir: Path,
    replace: bool,
) -> int:
    """Write every table to a staging folder first, then move the files into place, so a
    failure part-way leaves the previous tables untouched. Returns the files written."""
    features_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging.", dir=features_dir))
    written = []
    try:
        for view, by_cutoff in tables.items():
            for cutoff, frame in by_cutoff.items():
                target = cutoff_file(staging, view, cutoff)
                target.parent.mkdir(parents=True, exist_ok=True)
                _write_view(frame, view, target)
                written.append((target, cutoff_file(features_dir, view, cutoff)))
        for view, frame in directories.items():
            target = staging / view / "directory.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_view(frame, view, target)
            written.append((target, features_dir / view / "directory.parquet"))
        if replace:
            for view in VIEW_COLUMNS:
                for old in (features_dir / view).glob("*.parquet"):
                    old.unlink()
        for source, target in written:
            target.parent.mkdir(parents=True, exist_ok=True)
            source.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return len(written)


def _write_view(frame: pd.DataFrame, view: str, target: Path) -> None:
    """Parquet with the view's exact Arrow schema, so even an empty cutoff is typed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    key, ints, floats = VIEW_COLUMNS[view]
    schema = pa.schema(
        [(key, pa.string()), ("event_timestamp", pa.timestamp("ns", tz="UTC"))]
        + [(n, pa.int64()) for n in ints]
        + [(n, pa.float64()) for n in floats]
    )
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), target)


# ---- registry and online store -------------------------------------------------------------
def apply(store: Any, features_dir: Path) -> list[str]:
    """Register every definition (idempotent, like `feast apply`); returns object names."""
    from features.repo import build_definitions

    definitions = build_definitions(features_dir)
    objects = definitions.objects()
    store.apply(objects)
    return [obj.name for obj in objects]


def materialize(
    store: Any, features_dir: Path, until: pd.Timestamp, full: bool = False
) -> dict[str, str]:
    """Load feature rows up to `until` into the online store.

    Incremental by default: each view continues from where its last materialization ended
    (Feast keeps the intervals in the registry). `full` reloads from the first cutoff.
    """
    end = (until + pd.Timedelta(seconds=1)).to_pydatetime()
    if end.tzinfo is None:
        end = end.replace(tzinfo=_utc())
    views = list(VIEW_COLUMNS)
    if full:
        cutoffs = built_cutoffs(features_dir)
        start = (cutoffs[0] if cutoffs else until).to_pydatetime().replace(tzinfo=_utc())
        store.materialize(start - timedelta(seconds=1), end, feature_views=views)
    else:
        store.materialize_incremental(end, feature_views=views)
    intervals = {}
    for view in views:
        fv = store.get_feature_view(view)
        intervals[view] = str(fv.most_recent_end_time)
    return intervals


def _utc() -> Any:
    from datetime import UTC

    return UTC


# ---- reads ---------------------------------------------------------------------------------
def service_refs(store: Any, service: str) -> list[str]:
    """`view:feature` references of a feature service, in the order of `service_features`."""
    fs = store.get_feature_service(service)
    refs = {}
    for projection in fs.feature_view_projections:
        for feature in projection.features:
            refs[feature.name] = f"{projection.name_to_use()}:{feature.name}"
    return [refs[name] for name in service_features(service)]


def historical_matrix(
    store: Any, service: str, entity_df: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Point-in-time training rows for `entity_df` (join keys + `event_timestamp`) through
    Feast's `get_historical_features`; returns (keys in input order, float64 features)."""
    keys, frame = historical_frame(store, store.get_feature_service(service), entity_df, service)
    return keys, frame[service_features(service)].astype(np.float64)


def historical_frame(
    store: Any, features: Any, entity_df: pd.DataFrame, what: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`get_historical_features` for a feature service or a list of `view:feature` refs, with
    rows returned in the order of `entity_df`; returns (keys, feature columns)."""
    if entity_df.empty:
        raise ValueError(f"{what}: the entity dataframe is empty")
    frame = entity_df.reset_index(drop=True).copy()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame["_row"] = np.arange(len(frame), dtype=np.int64)
    result = store.get_historical_features(entity_df=frame, features=features).to_df()
    result = result.sort_values("_row").reset_index(drop=True)
    if len(result) != len(frame):
        raise RuntimeError(f"{what}: Feast returned {len(result)} rows for {len(frame)}")
    keys = result[list(entity_df.columns)]
    return keys, result.drop(columns=[*entity_df.columns, "_row"])


def latest_directory(features_dir: Path) -> dict[str, pd.DataFrame]:
    """The id directories of the latest build (ids, status and the cutoff they describe)."""
    out = {}
    for view in DIRECTORY_VIEWS:
        path = features_dir / view / "directory.parquet"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; run `clv features build`")
        out[view] = pd.read_parquet(path)
    return out


def latest_population(features_dir: Path) -> tuple[pd.Timestamp, dict[str, pd.DataFrame]]:
    """The cutoff of the latest build and the entities scored as of it, as Feast entity
    frames: "customer" (active customers) and "dormant" (aged leads, then former customers,
    each row keyed by the one id it has)."""
    directory = latest_directory(features_dir)
    customers, leads = directory["customer_directory"], directory["lead_directory"]
    as_of = pd.Timestamp(customers["event_timestamp"].iloc[0]).tz_convert(None)
    active = customers.loc[customers["customer_status"] == 1, "customer_id"].tolist()
    former = customers.loc[customers["customer_status"] == 2, "customer_id"].tolist()
    aged = leads.loc[leads["lead_status"] == 2, "lead_id"].tolist()
    dormant = {"lead_id": aged + [""] * len(former), "customer_id": [""] * len(aged) + former}
    return as_of, {
        "customer": pd.DataFrame({"customer_id": active}).assign(event_timestamp=as_of),
        "dormant": pd.DataFrame(dormant).assign(event_timestamp=as_of),
    }


# Why a known id has no features for the service asked, by directory status.
STATUS_WHY = {
    ("customer_id", 2): "it is a former customer (score it with /score_lead)",
    ("customer_id", 1): "it is active but has no features yet",
    ("lead_id", 1): "the lead is not aged yet (under 12 months old)",
    ("lead_id", 3): "the lead has converted (score the customer)",
}


class UnknownEntityError(LookupError):
    """An id the database does not know."""


class NoFeaturesError(LookupError):
    """A known id without feature rows yet (e.g. it signed up after the last cutoff)."""


@dataclass(frozen=True)
class OnlineFeatures:
    """Features of one or many entities for several services, from one online lookup."""

    key: str
    ids: list[str]  # the requested ids, in request order
    matrix: np.ndarray  # (ids, refs) float64, NaN = not observed
    positions: dict[str, int]  # feature name -> column of `matrix`
    known: np.ndarray  # the id exists in the database
    has_features: np.ndarray  # the id has at least one feature row online
    status: dict[str, int] | None = None  # directory status of ids without features

    def columns(self, names: list[str]) -> np.ndarray:
        """The float64 columns of `names`, in that order (one row per id)."""
        return self.matrix[:, [self.positions[name] for name in names]]

    def for_service(self, service: str) -> np.ndarray:
        """The columns one feature service serves, in its order."""
        return self.columns(service_features(service))

    def check(self) -> None:
        """Raise for the first id that is unknown or has no features yet."""
        for i, identifier in enumerate(self.ids):
            if not self.known[i]:
                raise UnknownEntityError(f"unknown {self.key} {identifier!r}")
            if not self.has_features[i]:
                status = (self.status or {}).get(identifier, 0)
                why = STATUS_WHY.get((self.key, status), "no cutoff since it joined")
                raise NoFeaturesError(f"{self.key} {identifier!r} has no features: {why}")


def snapshot_matrix(
    features_dir: Path, as_of: pd.Timestamp, entity: pd.DataFrame, names: list[str]
) -> pd.DataFrame:
    """The float64 features `names` of each row of `entity` (a Feast entity frame: join keys,
    "" where a row has no such id) as of the cutoff `as_of`, in row order, NaN where a row
    has no feature row.

    Read straight from that cutoff's files of the offline tables (Feast's file sources): rows
    are stamped with their cutoff and the views' TTL is shorter than the month between two
    cutoffs, so these are exactly the rows Feast's point-in-time retrieval joins as of the
    cutoff (and materialization loads online), without reading every earlier cutoff to find
    them. The on-demand ratios come from the view's own function, as in Feast."""
    views: dict[str, str] = {}
    for view in VIEW_COLUMNS:
        if view not in DIRECTORY_VIEWS:
            views.update({name: view for name in view_features(view) if name not in views})
    demanded = [name for name in names if name in ON_DEMAND_FLOAT]
    stored = [name for name in names if name not in ON_DEMAND_FLOAT]
    stored += [name for name in ON_DEMAND_INPUTS if demanded and name not in stored]
    unknown = [name for name in stored if name not in views]
    if unknown:
        raise KeyError(f"no feature view has the feature(s) {', '.join(unknown)}")
    by_view: dict[str, list[str]] = {}
    for name in stored:
        by_view.setdefault(views[name], []).append(name)
    columns: dict[str, np.ndarray] = {}
    for view, wanted in by_view.items():
        key = VIEW_COLUMNS[view][0]
        path = cutoff_file(features_dir, view, as_of)
        table = pd.read_parquet(path, columns=[key, *wanted])
        keys = pd.Index(table[key])
        if not keys.is_unique:
            raise ValueError(f"{path}: more than one row for some {key}")
        rows = keys.get_indexer(entity[key])
        values = table[wanted].to_numpy(np.float64)
        out = np.full((len(entity), len(wanted)), np.nan)
        found = rows >= 0
        out[found] = values[rows[found]]
        columns.update((name, out[:, j]) for j, name in enumerate(wanted))
    if demanded:
        inputs = {n: [None if v != v else v for v in columns[n].tolist()] for n in ON_DEMAND_INPUTS}
        for name, values in ratios(inputs).items():
            columns[name] = np.array([np.nan if v is None else v for v in values], np.float64)
    return pd.DataFrame({name: columns[name] for name in names})


def online_refs(store: Any, services: list[str]) -> list[str]:
    """Every `view:feature` reference needed for `services`, without duplicates."""
    refs: dict[str, None] = {}
    for service in services:
        for ref in service_refs(store, service):
            refs[ref] = None
    return list(refs)


@dataclass(frozen=True)
class _ViewRead:
    """One feature view to read: the Feast object, its join key and the features wanted."""

    view: Any
    join_key: str
    features: list[str]


def _python_values(data: dict[str, Any], features: list[str]) -> list[Any]:
    """Feast ValueProtos of `features` as Python scalars (None when null or absent)."""
    out = []
    for name in features:
        value = data.get(name)
        kind = None if value is None else value.WhichOneof("val")
        out.append(None if kind is None or kind == "null_val" else getattr(value, kind))
    return out


class OnlineReader:
    """A prepared online lookup of `refs` by `key`: the feature views to read, their
    join keys and the column order are resolved once from Feast's registry, so each lookup
    is one `online_read` per feature view through Feast's provider (the call
    `get_online_features` makes underneath), without its response protobuf, dict and
    on-demand machinery. The on-demand features are computed from the read values with the
    view's own function (`features.on_demand.ratios`), as Feast would.

    Only when some id comes back without any feature row is the id directory read, to tell
    unknown ids from new ones. `other_keys` fills join keys of services spanning two
    entities (a constant per lookup, like Feast's entity rows)."""

    def __init__(
        self,
        store: Any,
        refs: list[str],
        key: str,
        directory: str,
        other_keys: dict[str, str] | None = None,
    ) -> None:
        if not refs:
            raise ValueError("an online lookup needs at least one feature reference")
        self.store = store
        self.refs = list(refs)
        self.key = key
        self.other_keys = dict(other_keys or {})
        self.names = [ref.split(":", 1)[1] for ref in self.refs]
        self.positions = {name: i for i, name in enumerate(self.names)}
        self.on_demand = any(ref.startswith(ON_DEMAND_VIEW + ":") for ref in self.refs)
        stored = [r for r in self.refs if not r.startswith(ON_DEMAND_VIEW + ":")]
        if self.on_demand:
            stored += [f"customer_features:{n}" for n in ON_DEMAND_INPUTS]
        by_view: dict[str, list[str]] = {}
        for ref in dict.fromkeys(stored):
            view, name = ref.split(":", 1)
            by_view.setdefault(view, []).append(name)
        self.reads = [self._view_read(view, names) for view, names in by_view.items()]
        status = VIEW_COLUMNS[directory][1][0]
        self.directory = self._view_read(directory, [status])
        self._config = store.config
        self._provider = store.provider
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        self._entity_key, self._value = EntityKey, Value

    def _view_read(self, name: str, features: list[str]) -> _ViewRead:
        view = self.store.get_feature_view(name)
        keys = [column.name for column in view.entity_columns]
        if len(keys) != 1:
            raise ValueError(f"feature view {name!r} has join keys {keys}; expected one")
        join_key = keys[0]
        if join_key != self.key and join_key not in self.other_keys:
            raise KeyError(f"feature view {name!r} needs join key {join_key!r}; none given")
        return _ViewRead(view, join_key, features)

    def _read(self, read: _ViewRead, ids: list[str]) -> list[Any]:
        """`online_read` of one view: per id, None or the features' Python values."""
        key = read.join_key
        values = ids if key == self.key else [self.other_keys[key]] * len(ids)
        entity_keys = [
            self._entity_key(join_keys=[read.join_key], entity_values=[self._value(string_val=v)])
            for v in values
        ]
        rows = self._provider.online_read(self._config, read.view, entity_keys, read.features)
        out: list[Any] = []
        for _, data in rows:
            row = None if data is None else _python_values(data, read.features)
            # SQLite returns None for an entity it does not hold; Redis a row of empty values.
            out.append(None if row is None or all(v is None for v in row) else row)
        return out

    def lookup(self, ids: list[str]) -> OnlineFeatures:
        """Every feature of `refs` for `ids` (in request order), with which ids are known."""
        columns: dict[str, list[Any]] = {}
        found = np.zeros(len(ids), dtype=bool)
        for read in self.reads:
            rows = self._read(read, ids) if ids else []
            empty = [None] * len(read.features)
            found |= np.fromiter((row is not None for row in rows), bool, len(ids))
            values = list(zip(*(row or empty for row in rows), strict=True))
            values = values or [()] * len(read.features)
            columns.update(zip(read.features, map(list, values), strict=True))
        if self.on_demand:
            columns.update(ratios(columns))
        matrix = np.array([columns[name] for name in self.names], dtype=np.float64).T
        matrix = np.ascontiguousarray(matrix.reshape(len(ids), len(self.names)))
        known = found.copy()
        statuses: dict[str, int] = {}
        if not found.all():
            missing = [identifier for identifier, ok in zip(ids, found, strict=True) if not ok]
            status = [row[0] if row else None for row in self._read(self.directory, missing)]
            known[~found] = [value is not None for value in status]
            statuses = {i: int(v) for i, v in zip(missing, status, strict=True) if v is not None}
        return OnlineFeatures(self.key, list(ids), matrix, self.positions, known, found, statuses)
