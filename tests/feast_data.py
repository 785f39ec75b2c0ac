"""Small inline data and configs shared by the Feast / online-store tests."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from spark_features.config import Config, FeastConfig, OfflineConfig, OnlineStoreConfig, SparkConfig
from spark_features.features.base import FeatureView

KEY_TYPES = StructType([StructField("symbol", StringType(), False), StructField("timeframe", StringType(), False)])
VIEW = FeatureView(
    name="quotes",
    version="1.0.0",
    entity_keys=("symbol", "timeframe"),
    key_types=KEY_TYPES,
    features=StructType(
        [
            StructField("x", DoubleType(), True),
            StructField("n", LongType(), True),
            StructField("tag", StringType(), True),
            StructField("flag", BooleanType(), True),
        ]
    ),
    ttl=timedelta(minutes=30),
)
FEATURES = VIEW.features.fieldNames()
T0 = datetime(2024, 3, 1, tzinfo=UTC)
Row = tuple[str, str, datetime, float | None, int, str, bool]
ENTITIES = [(s, tf) for s in "ABCDE" for tf in ("1m", "5m")] + [("Z", "1m")]  # Z never has data


def sample_rows(count: int = 60) -> list[Row]:
    """Rows of 10 (symbol, timeframe) entities, 3 minutes apart, odd microseconds, some null x."""
    out: list[Row] = []
    for i in range(count):
        symbol, timeframe = ENTITIES[i % 10]
        ts = T0 + timedelta(minutes=3 * i, microseconds=7 * i)
        out.append((symbol, timeframe, ts, None if i % 7 == 0 else i * 1.5, i, f"t{i}", i % 2 == 0))
    return out


def frame(spark: SparkSession, rows: Sequence[Row]) -> DataFrame:
    return spark.createDataFrame(list(rows), VIEW.stored_schema)


def latest(rows: Sequence[Row], start: datetime, end: datetime) -> dict[tuple[str, str], dict[str, Any]]:
    """Reference: per entity, the features of the row with the greatest event time in (start, end]."""
    best: dict[tuple[str, str], Row] = {}
    for row in rows:
        if start < row[2] <= end and ((row[0], row[1]) not in best or row[2] > best[(row[0], row[1])][2]):
            best[(row[0], row[1])] = row
    return {key: dict(zip(FEATURES, row[3:], strict=True)) for key, row in best.items()}


def online_by_entity(columns: dict[str, list[Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Feast's column dict -> {entity: {feature: value}}, entities whose features are all null dropped."""
    out = {}
    for i, key in enumerate(zip(columns["symbol"], columns["timeframe"], strict=True)):
        values = {f: columns[f][i] for f in FEATURES}
        if any(v is not None for v in values.values()):
            out[key] = values
    return out


def feast_config(tmp: Path, online: OnlineStoreConfig, project: str | None = None) -> Config:
    return Config(
        spark=SparkConfig(master="local[2]", shuffle_partitions=2),
        offline=OfflineConfig(root=str(tmp / "offline")),
        feast=FeastConfig(
            repo_path=str(tmp),
            project=project or f"t{uuid.uuid4().hex[:12]}",  # a fresh key space on the shared Redis
            registry=str(tmp / "registry.db"),
            online_store=online,
        ),
        project_root=tmp,
    )


def online_store_config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """A fresh Feast config whose online store is ``request.param``: "sqlite" (a file under
    ``tmp_path``) or "redis" (the session's redis-server, a fresh key space)."""
    if request.param == "redis":
        redis = request.getfixturevalue("redis_server")
        return feast_config(tmp_path, OnlineStoreConfig(type="redis", connection_string=redis.connection_string))
    return feast_config(tmp_path, OnlineStoreConfig(type="sqlite", path=str(tmp_path / "online.db")))
