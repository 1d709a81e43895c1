"""The scoring engine behind the service: champions from the registry, features from Feast,
scores from the shared scoring maths, hot-swapped atomically between requests.

Feature rows only change when Feast materializes a new cutoff, and champions only when an
alias moves, so the engine scores the whole served population once per such change (a
"snapshot", built from the latest cutoff's rows of Feast's offline tables, `snapshot_matrix`:
what Feast's point-in-time retrieval returns as of that cutoff and what materialization loads
online) and answers requests from it: for customers the snapshot keeps each id's whole /score
answer as JSON text, so a request (or a batch of 1,000) is a lookup. An id the snapshot does
not hold is looked up in Feast's online store (a prepared `OnlineReader`, cached per champion
set) and scored on the spot; that lookup is also what tells an unknown id from one that has no
features yet.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from features.store import (
    OnlineReader,
    StoreConfig,
    latest_population,
    online_refs,
    open_store,
    snapshot_matrix,
)
from serving.champions import Champion, Registry
from serving.scoring import ScoreTable, row_result, row_results, score_matrix

log = logging.getLogger(__name__)

CUSTOMER_MODELS = ("churn", "expansion", "referral", "clv")
DORMANT_MODELS = ("reactivation",)
ALL_MODELS = CUSTOMER_MODELS + DORMANT_MODELS


class NotReadyError(RuntimeError):
    """The service has no champions or no feature store yet."""


@dataclass(frozen=True)
class EngineConfig:
    tracking_uri: str
    store: StoreConfig
    poll_seconds: float = 10.0
    batch_limit: int = 1000


@dataclass(frozen=True)
class Population:
    """Precomputed scores of every id of one entity kind, per model; for customers also the
    JSON text of each id's whole /score answer, so that requests only look bytes up."""

    index: dict[str, int]
    tables: dict[str, ScoreTable]
    responses: list[bytes] | None = None


@dataclass(frozen=True)
class State:
    """Everything one request reads; replaced as a whole, never mutated."""

    champions: dict[str, Champion]
    features_as_of: str | None
    customers: Population | None = None
    dormant: Population | None = None
    built_at: float = field(default_factory=time.time)


class Engine:
    """Loads champions and the feature store, answers scoring calls, hot-swaps."""

    def __init__(
        self,
        config: EngineConfig,
        prebuild_responses: bool = True,
        score_rows: Callable[[Any, np.ndarray], ScoreTable] | None = None,
        online_store: bool = True,
    ) -> None:
        """`prebuild_responses`: keep each customer's JSON answer in the snapshot (what the
        service wants; batch scoring, which reads the score tables, does not). `score_rows`
        scores a whole population's matrix for one model (default `score_matrix` with
        reasons, in this process; batch scoring may leave the reasons out or spread the rows
        over a Dask cluster). `online_store`: open Feast's online store for ids outside the
        snapshot (the service); batch scoring reads only the snapshot, so never imports Feast."""
        self.config = config
        self.prebuild_responses = prebuild_responses
        self.score_rows = score_rows or score_matrix
        self.online_store = online_store
        self.state = State(champions={}, features_as_of=None)
        self.not_ready_reason: str | None = "starting"
        self.load_errors: dict[str, str] = {}
        self.store: Any = None
        self.registry: Registry | None = None
        # Seconds of the steps of the last refresh that rebuilt the snapshot: champions (the
        # registry, loading, opening Feast), features (the snapshot's matrices), scoring
        # (every model on its population) and responses (the prebuilt JSON answers).
        self.timings: dict[str, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._directory_stamp: float | None = None
        # Prepared online lookups by (feature services, key); reset when champions change.
        self._readers: dict[tuple[tuple[str, ...], str], OnlineReader] = {}

    # ---- life cycle --------------------------------------------------------------------------
    def start(self, background: bool = True) -> None:
        """Open Feast and the registry and load champions; never raises (the reason is kept
        for /readyz and /models). With `background`, this happens in a thread that then
        keeps polling, so the service answers /livez at once and /readyz when loaded."""
        if background:
            threading.Thread(target=self._poll, name="champion-poller", daemon=True).start()
        else:
            self.refresh()

    def stop(self) -> None:
        self._stop.set()

    @property
    def ready(self) -> bool:
        return self.not_ready_reason is None

    def _poll(self) -> None:
        # The first load imports Feast and MLflow and builds the snapshot: millions of
        # long-lived objects, which the cyclic collector would keep re-scanning meanwhile.
        gc.disable()
        try:
            self.refresh()
        except Exception:
            log.exception("first load failed")
        finally:
            # What is loaded now lives as long as the process: keep it out of the
            # collector's full passes, which otherwise pause requests.
            gc.collect()
            gc.freeze()
            gc.enable()
        while not self._stop.wait(self.config.poll_seconds):
            try:
                self.refresh()
            except Exception:  # the poller must survive anything; the reason is recorded
                log.exception("refresh failed; keeping the models being served")

    def refresh(self) -> bool:
        """Load champions that moved and rebuild the snapshot if anything changed; a version
        that fails to load leaves the old one serving. Returns whether state changed."""
        with self._lock:
            started = time.perf_counter()
            try:
                if self.registry is None:
                    self.registry = Registry(self.config.tracking_uri)
                wanted = self.registry.champion_versions(list(ALL_MODELS))
            except Exception as exc:
                self.not_ready_reason = f"registry or feature store unreachable: {exc}"
                log.warning(self.not_ready_reason)
                return False
            current = self.state.champions
            moved = {
                name: version
                for name, version in wanted.items()
                if version is not None
                and not (name in current and current[name].version == version)
            }
            with ThreadPoolExecutor(max(1, len(moved)), thread_name_prefix="load") as pool:
                loads = self._start_loads(pool, moved)
                # Feast is imported while XGBoost parses the boosters (without the GIL).
                try:
                    if self.online_store and self.store is None:
                        self.store = open_store(self.config.store)
                except Exception as exc:
                    self.not_ready_reason = f"registry or feature store unreachable: {exc}"
                    log.warning(self.not_ready_reason)
                    return False
                champions, changed = self._loaded(current, loads)
            loaded = time.perf_counter() - started
            stamp = self._directory_mtime()
            if stamp != self._directory_stamp:
                changed = True
            if not champions:
                self.not_ready_reason = "no model has a champion yet (run `clv registry promote`)"
                return False
            if changed or self.state.customers is None:
                # Publish the new champions first, without a snapshot: requests meanwhile are
                # answered through the online store by the new models, never a mix of both.
                self._readers = {}
                self.state = State(champions, self._as_of())
                self.not_ready_reason = None
                self.timings = {"champions": loaded}
                self.state = self._build(champions)
                self._directory_stamp = stamp
            self.not_ready_reason = None
            return changed

    def _start_loads(
        self, pool: ThreadPoolExecutor, versions: dict[str, str]
    ) -> dict[str, tuple[str, Future[Champion]]]:
        """Start loading each moved version on `pool`: the registry is asked where each
        version's files are here, one after the other; the files load side by side."""
        if not versions:
            return {}
        assert self.registry is not None
        # Imported here, before the threads: two threads importing at once take longer
        # than one after the other.
        from training.pyfunc import load_scorer  # noqa: F401

        loads: dict[str, tuple[str, Future[Champion]]] = {}
        for name, version in versions.items():
            try:
                files = self.registry.model_files(name, version)
            except Exception as exc:  # recorded as that version's load error
                failed: Future[Champion] = Future()
                failed.set_exception(exc)
                loads[name] = (version, failed)
                continue
            loads[name] = (version, pool.submit(self.registry.load_files, name, version, files))
        return loads

    def _loaded(
        self, current: dict[str, Champion], loads: dict[str, tuple[str, Future[Champion]]]
    ) -> tuple[dict[str, Champion], bool]:
        """The champions after `loads`, and whether any changed; a version that failed to
        load is recorded and the one before it kept."""
        champions = dict(current)
        changed = False
        for name, (version, future) in loads.items():
            try:
                champions[name] = future.result()
                self.load_errors.pop(name, None)
                changed = True
                log.info("loaded %s version %s", name, version)
            except Exception as exc:
                self.load_errors[name] = f"version {version} failed to load: {exc}"
                log.error("%s: %s; still serving %s", name, self.load_errors[name],
                          current[name].version if name in current else "nothing")  # fmt: skip
        return champions, changed

    def _as_of(self) -> str | None:
        path = self.config.store.features_dir / "customer_directory" / "directory.parquet"
        if not path.exists():
            return None
        stamp = pd.read_parquet(path, columns=["event_timestamp"])["event_timestamp"].max()
        return str(pd.Timestamp(stamp).date())

    def _directory_mtime(self) -> float | None:
        path = self.config.store.features_dir / "customer_directory" / "directory.parquet"
        return path.stat().st_mtime if path.exists() else None

    # ---- snapshot -----------------------------------------------------------------------------
    def _build(self, champions: dict[str, Champion]) -> State:
        started = time.perf_counter()
        features_dir = self.config.store.features_dir
        try:
            as_of, entities = latest_population(features_dir)
            dormant = entities["dormant"]
            ids = {
                "customer": entities["customer"]["customer_id"].tolist(),
                "dormant": [lead or customer for lead, customer in zip(
                    dormant["lead_id"], dormant["customer_id"], strict=True)],
            }  # fmt: skip
            models = {
                kind: [champions[m] for m in names if m in champions]
                for kind, names in (("customer", CUSTOMER_MODELS), ("dormant", DORMANT_MODELS))
            }
            matrices = {
                kind: snapshot_matrix(features_dir, as_of, entities[kind], _union(models[kind]))
                for kind in models
                if models[kind] and ids[kind]
            }
        except FileNotFoundError as exc:
            log.warning("no feature snapshot: %s", exc)
            return State(champions, None)
        read = time.perf_counter()
        populations = {}
        for kind in ("customer", "dormant"):
            began = time.perf_counter()
            populations[kind] = self._population(models[kind], ids[kind], matrices.get(kind))
            self.timings[f"scoring_{kind}"] = time.perf_counter() - began
        customer_pop, dormant_pop = populations["customer"], populations["dormant"]
        scored = time.perf_counter()
        self.timings.update(features=read - started, scoring=scored - read)
        log.info(
            "scored %d customers and %d dormant contacts as of %s in %.1f s (features %.1f s)",
            len(ids["customer"]), len(ids["dormant"]), as_of.date(), scored - started,
            read - started,
        )  # fmt: skip
        state = State(champions, str(as_of.date()), customer_pop, dormant_pop)
        if not self.prebuild_responses:
            return state
        state = self._with_responses(state)
        self.timings["responses"] = time.perf_counter() - scored
        return state

    def _population(
        self, models: list[Champion], ids: list[str], matrix: pd.DataFrame | None
    ) -> Population | None:
        """Every model's score table of one population, from its feature matrix (columns:
        the union of the models' features)."""
        if matrix is None:
            return None
        values = matrix.to_numpy(np.float64)  # one copy; each model takes its columns from it
        position = {name: i for i, name in enumerate(matrix.columns)}
        tables = {
            m.name: self.score_rows(m.scorer, values[:, [position[f] for f in m.features]])
            for m in models
        }
        return Population({identifier: i for i, identifier in enumerate(ids)}, tables)

    def _with_responses(self, state: State) -> State:
        """`state` with the JSON answer of every customer of its snapshot."""
        population = state.customers
        if population is None:
            return state
        models = [state.champions[m] for m in CUSTOMER_MODELS if m in state.champions]
        rows = list(population.index.values())
        answers = {
            m.name: row_results(population.tables[m.name], rows, m.features, m.name, m.version)
            for m in models
        }
        responses = []
        for k, identifier in enumerate(population.index):
            result: dict[str, Any] = {"customer_id": identifier}
            result["features_as_of"] = state.features_as_of
            result.update((name, answers[name][k]) for name in answers)
            responses.append(customer_json(result))
        return replace(state, customers=replace(population, responses=responses))

    # ---- requests ----------------------------------------------------------------------------
    def _require(self) -> State:
        if not self.ready:
            raise NotReadyError(self.not_ready_reason or "not ready")
        return self.state

    def score_customers(self, ids: list[str]) -> list[dict[str, Any]]:
        """Every customer model's answer for each id, in order."""
        state = self._require()
        models = [state.champions[m] for m in CUSTOMER_MODELS if m in state.champions]
        return self._score(state, models, state.customers, "customer_id", ids)

    def snapshot_json(self, ids: list[str]) -> list[bytes] | None:
        """The JSON answers of `ids` when the snapshot holds every one of them, else None;
        never touches the feature store, so it may run on the event loop."""
        state = self._require()
        population = state.customers
        if population is None or population.responses is None:
            return None
        index, responses = population.index, population.responses
        try:
            return [responses[index[identifier]] for identifier in ids]
        except KeyError:
            return None

    def customer_json(self, ids: list[str]) -> list[bytes]:
        """`score_customers` as the JSON text of each answer (the /score body), from the
        snapshot where it has the id and through the online store for the others."""
        state = self._require()
        population = state.customers
        models = [state.champions[m] for m in CUSTOMER_MODELS if m in state.champions]
        if population is None or population.responses is None:
            results = self._score(state, models, population, "customer_id", ids)
            return [customer_json(result) for result in results]
        index, responses = population.index, population.responses
        missing = [i for i in dict.fromkeys(ids) if i not in index]
        live = self._score(state, models, None, "customer_id", missing) if missing else []
        fresh = {result["customer_id"]: customer_json(result) for result in live}
        return [responses[index[i]] if i in index else fresh[i] for i in ids]

    def score_dormant(self, key: str, identifier: str) -> dict[str, Any]:
        """The reactivation answer for an aged lead (lead_id) or a former customer."""
        state = self._require()
        models = [state.champions[m] for m in DORMANT_MODELS if m in state.champions]
        if not models:
            raise NotReadyError("the reactivation model has no champion yet")
        return self._score(state, models, state.dormant, key, [identifier])[0]

    def _score(
        self,
        state: State,
        models: list[Champion],
        population: Population | None,
        key: str,
        ids: list[str],
    ) -> list[dict[str, Any]]:
        """Answers for `ids`, from the population's tables where it has the id and through
        one online lookup by `key` for all the others."""
        index = population.index if population else {}
        missing = [i for i in dict.fromkeys(ids) if i not in index]
        live = self._live(state, models, key, missing) if missing else {}
        out = []
        for identifier in ids:
            result: dict[str, Any] = {key: identifier, "features_as_of": state.features_as_of}
            if identifier in index:
                assert population is not None
                tables, row = population.tables, index[identifier]
            else:
                tables, row = live[identifier]
            for m in models:
                result[m.name] = row_result(tables[m.name], row, m.features, m.name, m.version)
            out.append(result)
        return out

    def _reader(self, models: list[Champion], key: str) -> OnlineReader:
        """The prepared online lookup of `models`' features by `key` (cached)."""
        services = tuple(sorted({m.feature_service for m in models}))
        reader = self._readers.get((services, key))
        if reader is None:
            directory = "lead_directory" if key == "lead_id" else "customer_directory"
            refs = online_refs(self.store, list(services))
            # The reactivation service spans leads and customers: rows carry both keys.
            other = {}
            if models[0].name in DORMANT_MODELS:
                other = {"customer_id" if key == "lead_id" else "lead_id": ""}
            reader = OnlineReader(self.store, refs, key, directory, other)
            self._readers[(services, key)] = reader
        return reader

    def _live(
        self, state: State, models: list[Champion], key: str, ids: list[str]
    ) -> dict[str, tuple[dict[str, ScoreTable], int]]:
        """Online-store lookup and scoring of ids outside the snapshot."""
        found = self._reader(models, key).lookup(ids)
        found.check()
        tables = {m.name: score_matrix(m.scorer, found.columns(m.features)) for m in models}
        return {identifier: (tables, i) for i, identifier in enumerate(ids)}

    def models(self) -> dict[str, Any]:
        """What is loaded, for GET /models."""
        state = self.state
        info: dict[str, Any] = {
            "ready": self.ready,
            "not_ready_reason": self.not_ready_reason,
            "features_as_of": state.features_as_of,
            "snapshot_built_at": _iso(state.built_at) if state.customers else None,
            "models": [],
        }
        for name in ALL_MODELS:
            champion = state.champions.get(name)
            entry: dict[str, Any] = {"name": name, "loaded": champion is not None}
            if champion:
                entry.update(
                    version=champion.version,
                    feature_service=champion.feature_service,
                    loaded_at=_iso(champion.loaded_at),
                    features=len(champion.features),
                )
                try:
                    entry["aliases"] = self.registry.describe(name) if self.registry else {}
                except Exception as exc:
                    entry["aliases"] = {"error": str(exc)}
            if name in self.load_errors:
                entry["load_error"] = self.load_errors[name]
            info["models"].append(entry)
        return info


def customer_json(result: dict[str, Any]) -> bytes:
    """The /score body of one `score_customers` answer: every field of `CustomerScores` in
    its order, null for a model without a champion."""
    body = {
        "customer_id": result["customer_id"],
        "features_as_of": result["features_as_of"],
        **{name: result.get(name) for name in CUSTOMER_MODELS},
    }
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def _iso(stamp: float) -> str:
    return pd.Timestamp(stamp, unit="s", tz="UTC").isoformat()


def _union(models: list[Champion]) -> list[str]:
    """Every feature any of `models` uses, in first-use order."""
    return list(dict.fromkeys(name for m in models for name in m.features))
