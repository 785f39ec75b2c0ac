"""The executor-side writer on its own (no Spark job), against real SQLite and Redis: it stores exactly
what Feast's own ``online_write_batch`` stores, Feast's SDK reads it, and newer rows win."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import redis
from feast.utils import _convert_arrow_to_proto
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from spark_features.config import Config, OnlineStoreConfig
from spark_features.feast_provider import apply, feature_store, registered_view
from spark_features.features.base import FeatureView
from spark_features.online import get_online, write_spec
from spark_features.online_encoding import value_field
from spark_features.online_writer import WriteSpec, make_writer, write_all
from tests.feast_data import KEY_TYPES, feast_config, online_store_config

VIEW = FeatureView(
    name="ticks",
    version="2.1.0",
    entity_keys=("symbol", "timeframe"),
    key_types=KEY_TYPES,
    features=StructType(
        [
            StructField("price", DoubleType(), True),
            StructField("size", FloatType(), True),
            StructField("trades", IntegerType(), True),
            StructField("volume", LongType(), True),
            StructField("venue", StringType(), True),
            StructField("halted", BooleanType(), True),
            StructField("last_trade", TimestampType(), True),
        ]
    ),
    has_created_timestamp=True,
)
FEATURES = VIEW.features.fieldNames()
T = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("timeframe", pa.string()),
        ("event_timestamp", TS),
        ("created_timestamp", TS),
        ("price", pa.float64()),
        ("size", pa.float32()),
        ("trades", pa.int32()),
        ("volume", pa.int64()),
        ("venue", pa.string()),
        ("halted", pa.bool_()),
        ("last_trade", TS),
    ]
)


def batch(*rows: tuple[str, datetime, datetime, float | None]) -> pa.RecordBatch:
    """Rows (symbol, event time, created time, price) of timeframe 1m; the other features derived."""
    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for symbol, event, created, price in rows:
        values = [symbol, "1m", event, created, price, None, None, None, None, None, event]
        if price is not None:
            values[5:10] = [price / 3, int(price) - 5, int(price * 1e9), f"v{price}é", price > 2]
        for name, value in zip(SCHEMA.names, values, strict=True):
            columns[name].append(value)
    return pa.RecordBatch.from_pydict(columns, schema=SCHEMA)


def spec(config: Config) -> WriteSpec:
    store = feature_store(config)
    apply(store, [VIEW], config)
    return write_spec(store, VIEW)


def feasts_write(config: Config, data: pa.RecordBatch) -> None:
    """Feast's own materialize step: its Arrow -> proto conversion, then ``online_write_batch``."""
    store = feature_store(config)
    apply(store, [VIEW], config)
    view = registered_view(store, VIEW)
    join_keys = {e.name: e.dtype.to_value_type() for e in view.entity_columns}
    rows = _convert_arrow_to_proto(data, view, join_keys)
    store._get_provider().online_write_batch(store.config, view, rows, None)


def online(config: Config, *symbols: str) -> dict[str, list[Any]]:
    rows = [{"symbol": s, "timeframe": "1m"} for s in symbols]
    return get_online(feature_store(config), rows, [f"ticks:{f}" for f in FEATURES])


def prices(config: Config, *symbols: str) -> list[Any]:
    return online(config, *symbols)["price"]


SAMPLE = batch(("A", T, T, 1.5), ("B", T + US, T, None), ("C", T - timedelta(days=400), T, 7.25), ("D", T, T, 0.0))


def test_value_fields_follow_feast_value_type_names() -> None:
    assert value_field("DOUBLE") == "double_val"
    assert value_field("UNIX_TIMESTAMP") == "unix_timestamp_val"
    assert value_field("STRING_LIST") == "string_list_val"


def test_sqlite_rows_equal_feasts_own_write(tmp_path: Path) -> None:
    ours = feast_config(tmp_path, OnlineStoreConfig(type="sqlite", path=str(tmp_path / "ours.db")), project="p")
    theirs = feast_config(tmp_path, OnlineStoreConfig(type="sqlite", path=str(tmp_path / "feast.db")), project="p")
    assert write_all(spec(ours), [SAMPLE]) == 4
    feasts_write(theirs, SAMPLE)

    def stored(path: Path) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as conn:
            query = "SELECT entity_key, feature_name, value, value_text, event_ts, created_ts FROM p_ticks_v2_1_0"
            return sorted(conn.execute(query).fetchall())

    assert stored(tmp_path / "ours.db") == stored(tmp_path / "feast.db")
    assert len(stored(tmp_path / "ours.db")) == 4 * len(FEATURES)
    assert online(ours, "A", "B", "C", "D", "Z") == online(theirs, "A", "B", "C", "D", "Z")
    assert online(ours, "A")["venue"] == ["v1.5é"] and prices(ours, "B", "Z") == [None, None]


def test_redis_hashes_equal_feasts_own_write(tmp_path: Path, redis_server: Any) -> None:
    connection = redis_server.connection_string
    ours = feast_config(tmp_path, OnlineStoreConfig(type="redis", connection_string=connection), project="ours_eq")
    theirs = feast_config(tmp_path, OnlineStoreConfig(type="redis", connection_string=connection), project="feast_eq")
    assert write_all(spec(ours), [SAMPLE]) == 4
    feasts_write(theirs, SAMPLE)
    client = redis.Redis(host=redis_server.host, port=redis_server.port)

    def hashes(project: str) -> dict[bytes, dict[bytes, bytes]]:
        keys = client.keys(b"*" + project.encode())
        return {key[: -len(project)]: client.hgetall(key) for key in keys}

    mine, feasts = hashes("ours_eq"), hashes("feast_eq")
    assert len(mine) == 4
    created = b"_created_us:ticks_v2_1_0"  # ours only: exact created time for equal-event ties
    assert {key: {f: v for f, v in fields.items() if f != created} for key, fields in mine.items()} == feasts
    assert online(ours, "A", "B", "C", "D", "Z") == online(theirs, "A", "B", "C", "D", "Z")


@pytest.fixture(params=["sqlite", "redis"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    return online_store_config(request, tmp_path)


def test_newest_row_wins_to_the_microsecond_and_by_created_time(config: Config) -> None:
    target = spec(config)
    assert write_all(target, [batch(("A", T, T, 1.0), ("B", T, T, 10.0))]) == 2
    assert write_all(target, [batch(("A", T - US, T + US, 2.0))]) == 0  # older event, even if created later
    assert write_all(target, [batch(("A", T, T - US, 3.0))]) == 0  # same event, created earlier
    assert write_all(target, [batch(("A", T - timedelta(hours=1), T, 3.5))]) == 0
    assert prices(config, "A") == [1.0]
    assert write_all(target, [batch(("A", T, T + US, 4.0))]) == 1  # same event, created later: a correction
    assert write_all(target, [batch(("A", T, T + US, 5.0))]) == 1  # identical times: recomputed values land
    # duplicates inside one batch: the newest wins whatever the order
    assert write_all(target, [batch(("B", T + US, T, 11.0), ("B", T + 2 * US, T, 12.0), ("B", T + US, T, 13.0))]) == 2
    assert write_all(target, [batch(("C", T, T, None))]) == 1  # a stored null stays null
    assert prices(config, "A", "B", "C", "Z") == [5.0, 12.0, None, None]
    assert online(config, "A")["last_trade"] == [T]


def test_feasts_own_older_write_does_not_replace_ours(config: Config) -> None:
    write_all(spec(config), [batch(("A", T, T, 1.0))])
    feasts_write(config, batch(("A", T - timedelta(seconds=5), T + timedelta(hours=1), 2.0)))
    assert prices(config, "A") == [1.0]
    feasts_write(config, batch(("A", T + timedelta(seconds=5), T, 3.0)))
    assert prices(config, "A") == [3.0]
    assert write_all(spec(config), [batch(("A", T + timedelta(seconds=4), T, 4.0))]) == 0
    assert prices(config, "A") == [3.0]


def test_sqlite_batch_failing_in_its_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    config = feast_config(tmp_path, OnlineStoreConfig(type="sqlite", path=str(tmp_path / "online.db")))
    target = make_writer(spec(config))
    target.prepare()
    target.write(batch(("A", T, T, 1.0)))
    # A failure half-way through the batch's upserts (rows of "A" and "B" come before "C" in key order)
    with sqlite3.connect(tmp_path / "online.db") as conn:
        conn.execute(
            f"CREATE TRIGGER fail_on_c BEFORE INSERT ON {target.spec.table} "
            "WHEN NEW.value_text = 'vFAILé' BEGIN SELECT RAISE(ABORT, 'disk gone'); END"
        )
    bad = batch(("A", T + US, T, 2.0), ("B", T, T, 3.0), ("C", T, T, None)).set_column(
        SCHEMA.get_field_index("venue"), "venue", pa.array(["v2.0é", "v3.0é", "vFAILé"])
    )
    with pytest.raises(sqlite3.IntegrityError, match="disk gone"):
        target.write(bad)
    assert prices(config, "A", "B", "C") == [1.0, None, None]
    assert target.write(batch(("A", T + US, T, 2.0), ("B", T, T, 3.0))) == 2  # the same connection goes on
    assert prices(config, "A", "B") == [2.0, 3.0]
