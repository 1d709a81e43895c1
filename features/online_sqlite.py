"""Feast's SQLite online store with a batched write: the embedded default's online store.

Feast 0.67's `SqliteOnlineStore.online_write_batch` runs one `INSERT ... ON CONFLICT` per
feature value: materializing the default database is about 1.3 million statements, most of
the command's time. This subclass writes the same rows into the same table with one
`executemany` per batch, in one transaction; reads, table layout, `feast apply` and teardown
are Feast's own, so the `feast` CLI and every reader see an ordinary SQLite online store.
Configured by `type: features.online_sqlite.BatchedSqliteOnlineStore` in feature_store.yaml.
Stores with vector search or the OpenAI-compatible columns fall back to Feast's loop.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.infra.online_stores.sqlite import (
    SqliteOnlineStore,
    SqliteOnlineStoreConfig,
    _quote_id,
    _table_id,
    adapt_datetime_epoch,
)
from feast.utils import to_naive_utc

WRITE_CACHE_KIB = -65536  # page cache while writing a batch (64 MiB; SQLite's default is 2)
TYPE = "features.online_sqlite.BatchedSqliteOnlineStore"  # features.store.SQLITE_STORE_TYPE


class BatchedSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """Feast's SQLite settings (`path`, ...), under this store's type name."""

    type: Literal["features.online_sqlite.BatchedSqliteOnlineStore"] = TYPE  # type: ignore[assignment]


class BatchedSqliteOnlineStore(SqliteOnlineStore):
    """SQLite online store whose materialization writes each batch with one statement."""

    def online_write_batch(
        self,
        config: Any,
        table: Any,
        data: list[tuple[Any, dict[str, Any], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        store = config.online_store
        if store.vector_enabled or getattr(store, "enable_openai_compatible_store", False):
            super().online_write_batch(config, table, data, progress)
            return
        # Feast's own naming and encodings, so the rows are exactly those its loop writes.
        name = _quote_id(
            _table_id(config.project, table, config.registry.enable_online_feature_view_versioning)
        )
        version = config.entity_key_serialization_version
        rows: list[tuple[Any, ...]] = []
        for entity_key, values, timestamp, created_ts in data:
            key = serialize_entity_key(entity_key, entity_key_serialization_version=version)
            # Feast registers `adapt_datetime_epoch` for datetimes: adapt once per entity.
            event_ts = adapt_datetime_epoch(to_naive_utc(timestamp))
            created = None if created_ts is None else adapt_datetime_epoch(to_naive_utc(created_ts))
            rows.extend(
                (key, feature, value.SerializeToString(), extract_text_and_num(value, False)[0],
                 event_ts, created)
                for feature, value in values.items()
            )  # fmt: skip
        sql = (
            f"INSERT INTO {name} (entity_key, feature_name, value, value_text, event_ts, "
            "created_ts) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO "
            "UPDATE SET value = excluded.value, value_text = excluded.value_text, "
            "event_ts = excluded.event_ts, created_ts = excluded.created_ts"
        )
        conn = self._get_conn(config)
        cache = conn.execute("PRAGMA cache_size").fetchone()[0]
        conn.execute(f"PRAGMA cache_size={WRITE_CACHE_KIB}")  # the table's B-trees fit
        try:
            with conn:
                conn.executemany(sql, rows)
        finally:
            conn.execute(f"PRAGMA cache_size={int(cache)}")
        if progress:
            progress(len(data))
