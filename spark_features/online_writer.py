"""Executor side of online materialization: Arrow batches -> Feast rows -> ``online_write_batch``.

Runs inside Spark's Python workers (``mapInArrow``), so it imports nothing from pyspark and gets
everything it needs from a small picklable ``WriteSpec``. The online store, its connection and the
Feast view are built once per worker process and reused by every task that worker runs.

Newer values win. Feast's Redis store compares the stored event time itself (an equal or older row
is skipped). Feast's SQLite store overwrites blindly, so for SQLite every batch runs in one
``BEGIN IMMEDIATE`` transaction on the store's own connection: it reads the exact stored
``(event_timestamp, created_timestamp)`` of the batch's entities from a guard table, drops rows that
are older, records the survivors and lets ``online_write_batch`` write and commit them; the
transaction serializes concurrent writers (partitions, jobs) and a failure rolls back both tables.
A trigger on the feature table additionally refuses older rows from any other writer (Feast's own
``materialize`` included) at the one-second resolution Feast stores there.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
from feast import FeatureView as FeastView
from feast import RepoConfig
from feast.infra.online_stores.helpers import compute_table_id, get_online_store_from_config
from feast.infra.online_stores.online_store import OnlineStore
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.protos.feast.core.FeatureView_pb2 import FeatureView as FeatureViewProto
from feast.protos.feast.types import Value_pb2
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

EVENT_TS, CREATED_TS = "event_timestamp", "created_timestamp"
GUARD_TABLE = "spark_features_online_ts"
SQLITE_BUSY_MS = 300_000
NO_CREATED = -(2**63)  # sorts a row without created_timestamp before any row with one
COUNTS = pa.schema([("rows", pa.int64()), ("written", pa.int64())])
_LISTS = {
    "double_list_val": Value_pb2.DoubleList,
    "float_list_val": Value_pb2.FloatList,
    "int64_list_val": Value_pb2.Int64List,
    "int32_list_val": Value_pb2.Int32List,
    "bool_list_val": Value_pb2.BoolList,
    "string_list_val": Value_pb2.StringList,
    "bytes_list_val": Value_pb2.BytesList,
}

Row = tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]


@dataclass(frozen=True)
class WriteSpec:
    """What a worker needs to write one view: RepoConfig arguments (JSON), the Feast view (proto),
    and for each key and feature column the ``Value`` proto field it goes into."""

    repo: str
    view: bytes
    keys: tuple[tuple[str, str], ...]
    features: tuple[tuple[str, str], ...]
    has_created_timestamp: bool
    feast_name: str
    definition_hash: str

    @property
    def target_key(self) -> tuple[str, str, str]:
        """Identifies the worker-wide ``Target``; unlike the view proto it does not change with the
        registry's bookkeeping (materialization intervals), so a worker keeps one connection per view."""
        return (self.repo, self.feast_name, self.definition_hash)


def value_field(value_type: str) -> str:
    """The ``Value`` proto field of a Feast value type name (``DOUBLE`` -> ``double_val``,
    ``DOUBLE_LIST`` -> ``double_list_val``)."""
    return f"{value_type.lower()}_val"


def converter(field: str) -> Callable[[Any], ValueProto]:
    """A function from a Python value (as Arrow gives it) to a ``Value`` proto; None -> empty Value."""
    if field == "unix_timestamp_val":
        return lambda v: ValueProto() if v is None else ValueProto(unix_timestamp_val=int(v.timestamp()))
    if field == "unix_timestamp_list_val":
        return lambda v: (
            ValueProto()
            if v is None
            else ValueProto(unix_timestamp_list_val=Value_pb2.Int64List(val=[int(t.timestamp()) for t in v]))
        )
    if field in _LISTS:
        wrap = _LISTS[field]
        return lambda v: ValueProto() if v is None else ValueProto(**{field: wrap(val=v)})

    def scalar(v: Any) -> ValueProto:
        proto = ValueProto()
        if v is not None:
            setattr(proto, field, v)
        return proto

    return scalar


class Target:
    """One view's online store, connection and Feast view inside a worker process."""

    def __init__(self, spec: WriteSpec) -> None:
        self.config = RepoConfig(**json.loads(spec.repo))
        self.store: OnlineStore = get_online_store_from_config(self.config.online_store)
        proto = FeatureViewProto()
        proto.ParseFromString(spec.view)
        self.view = FeastView.from_proto(proto)
        self.spec = spec
        self.keys = [(name, converter(field)) for name, field in spec.keys]
        self.features = [(name, converter(field)) for name, field in spec.features]
        sqlite = isinstance(self.store, SqliteOnlineStore)
        self.guard = SqliteGuard(self.store, self.config, self.view) if sqlite else None

    def rows(self, batch: pa.RecordBatch) -> list[Row]:
        join_keys = [name for name, _ in self.keys]
        key_columns = [_key_protos(batch, name, conv) for name, conv in self.keys]
        entity_keys = [EntityKeyProto(join_keys=join_keys, entity_values=vs) for vs in zip(*key_columns, strict=True)]
        names = [name for name, _ in self.features]
        columns = [_protos(batch.column(name), conv) for name, conv in self.features]
        values = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
        events = _naive_utc(batch.column(EVENT_TS))
        created = _naive_utc(batch.column(CREATED_TS)) if self.spec.has_created_timestamp else [None] * len(events)
        return list(zip(entity_keys, values, events, created, strict=True))

    def write(self, batch: pa.RecordBatch) -> int:
        """Write one batch; returns the rows handed to the store (for SQLite: after dropping older ones)."""
        if batch.num_rows == 0:
            return 0
        rows = self.rows(batch)
        if self.guard is None:
            self.store.online_write_batch(self.config, self.view, rows, None)
            return len(rows)
        created = _micros(batch, CREATED_TS) if self.spec.has_created_timestamp else [None] * batch.num_rows
        return self.guard.write(rows, _micros(batch, EVENT_TS), created)


def _naive_utc(column: pa.Array) -> list[Any]:
    """Naive UTC datetimes (Feast's stores read naive as UTC; aware ones cost ~3x more to build)."""
    return list(column.cast(pa.timestamp("us")).to_pylist())


def _protos(column: pa.Array, conv: Callable[[Any], ValueProto]) -> list[ValueProto]:
    return [conv(v) for v in column.to_pylist()]


def _key_protos(batch: pa.RecordBatch, column: str, conv: Callable[[Any], ValueProto]) -> list[ValueProto]:
    """Like ``_protos``, one proto per distinct value: key columns such as a timeframe repeat a lot
    (``EntityKey`` copies the values it is given, so sharing them is safe)."""
    made: dict[Any, ValueProto] = {}
    out = []
    for v in batch.column(column).to_pylist():
        proto = made.get(v)
        if proto is None:
            proto = made[v] = conv(v)
        out.append(proto)
    return out


def _micros(batch: pa.RecordBatch, column: str) -> list[int | None]:
    return list(batch.column(column).cast(pa.int64()).to_pylist())


class SqliteGuard:
    """Newer-wins writes into Feast's SQLite store (see the module docstring)."""

    def __init__(self, store: OnlineStore, config: RepoConfig, view: FeastView) -> None:
        assert isinstance(store, SqliteOnlineStore)
        self.store, self.config, self.view = store, config, view
        # The store's own connection, so that our guard rows and Feast's upserts share one transaction.
        self.conn: sqlite3.Connection = store._get_conn(config)
        self.table = compute_table_id(config.project, view, config.registry.enable_online_feature_view_versioning)
        self.conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
        with self.conn:
            self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS {GUARD_TABLE} (table_name TEXT NOT NULL, entity_key BLOB NOT NULL, "
                "event_us INTEGER NOT NULL, created_us INTEGER, PRIMARY KEY (table_name, entity_key)) WITHOUT ROWID"
            )
        # Feast's columns hold whole seconds; the trigger goes with the table if Feast drops and recreates it,
        # so it is (re)created in every write transaction.
        self.trigger = (
            f'CREATE TRIGGER IF NOT EXISTS "{self.table}_keep_newer" BEFORE UPDATE ON "{self.table}" '
            "WHEN NEW.event_ts < OLD.event_ts OR (NEW.event_ts = OLD.event_ts AND NEW.created_ts < OLD.created_ts) "
            "BEGIN SELECT RAISE(IGNORE); END"
        )

    def write(self, rows: list[Row], events: Sequence[int | None], created: Sequence[int | None]) -> int:
        # The guard's own identity of an entity: the EntityKey proto's bytes (C-serialized; the keys are
        # always in the view's order), cheaper than Feast's Python serialize_entity_key.
        keys = [row[0].SerializeToString() for row in rows]
        order = [(e or 0, c if c is not None else NO_CREATED) for e, c in zip(events, created, strict=True)]
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute(self.trigger)
            keep = self._newest(keys, order)
            self.conn.executemany(
                f"INSERT INTO {GUARD_TABLE} VALUES (?, ?, ?, ?) ON CONFLICT (table_name, entity_key) "
                "DO UPDATE SET event_us = excluded.event_us, created_us = excluded.created_us",
                [(self.table, keys[i], events[i], created[i]) for i in keep],
            )
            if keep:
                self.store.online_write_batch(self.config, self.view, [rows[i] for i in keep], None)
            if self.conn.in_transaction:
                self.conn.commit()
        except BaseException:
            if self.conn.in_transaction:
                self.conn.rollback()
            raise
        return len(keep)

    def _newest(self, keys: list[bytes], order: list[tuple[int, int]]) -> list[int]:
        """Indices of rows at least as new as the stored row of their entity (and the newest per entity
        within the batch); equal rows are rewritten, so recomputed values land."""
        best: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            j = best.get(key)
            if j is None or order[i] >= order[j]:
                best[key] = i
        stored: dict[bytes, tuple[int, int]] = {}
        unique = list(best)
        for start in range(0, len(unique), 30_000):
            chunk = unique[start : start + 30_000]
            query = (
                f"SELECT entity_key, event_us, created_us FROM {GUARD_TABLE} "
                f"WHERE table_name = ? AND entity_key IN ({', '.join('?' * len(chunk))})"
            )
            for key, event_us, created_us in self.conn.execute(query, [self.table, *chunk]):
                stored[key] = (event_us, created_us if created_us is not None else NO_CREATED)
        return sorted(i for key, i in best.items() if key not in stored or order[i] >= stored[key])


_TARGETS: dict[Any, Target] = {}
MAX_TARGETS = 64


def target(spec: WriteSpec) -> Target:
    """The worker-wide ``Target`` of ``spec`` (Spark reuses Python workers across tasks)."""
    key = spec.target_key
    if key not in _TARGETS:
        if len(_TARGETS) >= MAX_TARGETS:  # a long-lived worker serving many stores: drop the oldest
            del _TARGETS[next(iter(_TARGETS))]
        _TARGETS[key] = Target(spec)
    return _TARGETS[key]


def write_batches(batches: Iterator[pa.RecordBatch], spec: WriteSpec) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: write every batch of the partition, yield one row of counts."""
    writer = target(spec)
    rows = written = 0
    for batch in batches:
        rows += batch.num_rows
        written += writer.write(batch)
    yield pa.RecordBatch.from_pydict({"rows": [rows], "written": [written]}, schema=COUNTS)
