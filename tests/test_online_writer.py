"""The executor-side writer on its own (no Spark job): newer-wins rules against real SQLite and Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyspark.sql.types import DoubleType, StructField, StructType

from spark_features.config import Config, OnlineStoreConfig
from spark_features.feast_provider import apply, feature_store
from spark_features.features.base import FeatureView
from spark_features.online import get_online, write_spec
from spark_features.online_writer import Target, value_field
from tests.feast_data import KEY_TYPES, feast_config

VIEW = FeatureView(
    name="ticks",
    version="2.1.0",
    entity_keys=("symbol", "timeframe"),
    key_types=KEY_TYPES,
    features=StructType([StructField("price", DoubleType(), True)]),
    has_created_timestamp=True,
)
T = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("timeframe", pa.string()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("created_timestamp", pa.timestamp("us", tz="UTC")),
        ("price", pa.float64()),
    ]
)


def batch(*rows: tuple[str, datetime, datetime, float | None]) -> pa.RecordBatch:
    columns = list(zip(*[(s, "1m", e, c, p) for s, e, c, p in rows], strict=True))
    arrays = [pa.array(col, f.type) for col, f in zip(columns, SCHEMA, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def writer(config: Config) -> Target:
    store = feature_store(config)
    apply(store, [VIEW], config)
    return Target(write_spec(store, config, VIEW))


def prices(config: Config, *symbols: str) -> list[Any]:
    rows = [{"symbol": s, "timeframe": "1m"} for s in symbols]
    return get_online(feature_store(config), rows, ["ticks:price"])["price"]


def test_value_fields_follow_feast_value_type_names() -> None:
    assert value_field("DOUBLE") == "double_val"
    assert value_field("UNIX_TIMESTAMP") == "unix_timestamp_val"
    assert value_field("STRING_LIST") == "string_list_val"


def test_sqlite_keeps_the_newest_row_to_the_microsecond_and_by_created_time(tmp_path: Path) -> None:
    config = feast_config(tmp_path, OnlineStoreConfig(type="sqlite", path=str(tmp_path / "online.db")))
    target = writer(config)
    us = timedelta(microseconds=1)
    assert target.write(batch(("A", T, T, 1.0), ("B", T, T, 10.0))) == 2
    assert target.write(batch(("A", T - us, T + us, 2.0))) == 0  # older event, even if created later
    assert target.write(batch(("A", T, T - us, 3.0))) == 0  # same event, created earlier
    assert prices(config, "A") == [1.0]
    assert target.write(batch(("A", T, T + us, 4.0))) == 1  # same event, created later: a correction
    assert target.write(batch(("A", T, T + us, 5.0))) == 1  # identical times: recomputed values land
    # duplicates inside one batch: the newest wins whatever the order
    assert target.write(batch(("B", T + us, T, 11.0), ("B", T + 2 * us, T, 12.0), ("B", T + us, T, 13.0))) == 1
    assert target.write(batch(("C", T, T, None))) == 1  # a stored null stays null
    assert prices(config, "A", "B", "C", "Z") == [5.0, 12.0, None, None]


def test_redis_keeps_the_newest_row(tmp_path: Path, redis_server: Any) -> None:
    online = OnlineStoreConfig(type="redis", connection_string=redis_server.connection_string)
    config = feast_config(tmp_path, online)
    target = writer(config)
    us = timedelta(microseconds=1)
    target.write(batch(("A", T, T, 1.0)))
    target.write(batch(("A", T - us, T, 2.0), ("A", T - timedelta(hours=1), T, 3.0)))
    target.write(batch(("B", T + us, T, 11.0), ("B", T + 2 * us, T, 12.0), ("B", T + us, T, 13.0)))
    assert prices(config, "A", "B") == [1.0, 12.0]
