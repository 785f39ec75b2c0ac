"""Every bad-input rule rejects the frame before anything is written, naming column, rule, count
and up to five sample keys."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType, TimestampNTZType

from spark_features.errors import DefinitionError, ValidationError
from spark_features.features.base import FeatureView
from spark_features.store import FeatureStoreSaveRepository
from spark_features.store.sources import read_input
from tests.test_store import DAY, VIEW, frame


def good(spark: SparkSession) -> DataFrame:
    return frame(spark, 1, symbols=("A", "B", "C", "D", "E", "F", "G"))


def nulls_in(column: str) -> Callable[[DataFrame], DataFrame]:
    return lambda df: df.withColumn(column, F.when(F.col("trades") % 3 == 0, F.lit(None)).otherwise(F.col(column)))


CASES: list[tuple[str, Callable[[DataFrame], DataFrame], str, str, int | None]] = [
    ("missing column", lambda df: df.drop("trades"), "trades", "missing column", None),
    ("extra column", lambda df: df.withColumn("bonus", F.lit(1)), "bonus", "undeclared column", None),
    ("type change", lambda df: df.withColumn("price", F.col("price").cast("float")), "price", "type float", None),
    ("null key", nulls_in("symbol"), "symbol", "null join key", 7 * 8),
    ("null timestamp", nulls_in("event_timestamp"), "event_timestamp", "null timestamp", 7 * 8),
    (
        "naive timestamp",
        lambda df: df.withColumn("event_timestamp", F.col("event_timestamp").cast(TimestampNTZType())),
        "event_timestamp",
        "timezone-naive",
        None,
    ),
    (
        "duplicate rows",
        lambda df: df.unionByName(df.filter(F.col("trades") < 2)),
        "symbol,event_timestamp",
        "duplicate",
        28,
    ),
    (
        "NaN",
        lambda df: df.withColumn("price", F.when(F.col("trades") == 5, F.lit(float("nan"))).otherwise(F.col("price"))),
        "price",
        "NaN or infinite",
        7,
    ),
    (
        "infinity",
        lambda df: df.withColumn("price", F.when(F.col("trades") == 5, F.lit(float("-inf"))).otherwise(F.col("price"))),
        "price",
        "NaN or infinite",
        7,
    ),
    (
        "future timestamp",
        lambda df: df.withColumn(
            "event_timestamp",
            F.when(F.col("trades") == 0, F.lit(datetime.now(UTC) + timedelta(days=3))).otherwise(
                F.col("event_timestamp")
            ),
        ),
        "event_timestamp",
        "in the future",
        7,
    ),
    ("empty frame", lambda df: df.limit(0), "*", "empty DataFrame", 0),
]


@pytest.mark.parametrize(("case", "mutate", "column", "rule", "count"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_before_any_write(
    spark: SparkSession,
    tmp_path: Path,
    case: str,
    mutate: Callable[[DataFrame], DataFrame],
    column: str,
    rule: str,
    count: int | None,
) -> None:
    repo = FeatureStoreSaveRepository(spark, str(tmp_path / "offline"))
    with pytest.raises(ValidationError) as raised:
        repo.write(VIEW, mutate(good(spark)))
    error = raised.value
    assert error.column == column and rule in error.rule, str(error)
    assert column in str(error) and rule in str(error)
    if count is not None:
        assert error.count == count, str(error)
    if count:
        assert 1 <= len(error.samples) <= 5
        assert all("symbol=" in s and "event_timestamp=" in s for s in error.samples)
    assert not Path(repo.uri(VIEW)).exists(), "nothing may be written on failure"


def test_rejection_leaves_an_existing_table_unchanged(spark: SparkSession, tmp_path: Path) -> None:
    repo = FeatureStoreSaveRepository(spark, str(tmp_path / "offline"))
    repo.write(VIEW, good(spark))
    versions = len(list((Path(repo.uri(VIEW)) / "_delta_log").glob("*.json")))
    with pytest.raises(ValidationError):
        repo.write(VIEW, nulls_in("symbol")(good(spark).withColumn("price", F.col("price") * 2)))
    assert len(list((Path(repo.uri(VIEW)) / "_delta_log").glob("*.json"))) == versions
    assert repo.read(VIEW).agg(F.max("price")).first()[0] == 24.0  # type: ignore[index]


def test_rows_outside_the_declared_range_are_rejected(spark: SparkSession, tmp_path: Path) -> None:
    repo = FeatureStoreSaveRepository(spark, str(tmp_path / "offline"))
    with pytest.raises(ValidationError, match="outside the write range") as raised:
        repo.write(VIEW, good(spark), start=DAY, end=DAY + timedelta(hours=12))
    assert raised.value.count == 7 * 12


@pytest.mark.parametrize("name", ["../escape", "Prices", "1prices", "a b", "x" * 64, "event_date"])
def test_unsafe_names_are_refused(name: str) -> None:
    if name != "event_date":  # reserved as a column, fine as a view name
        with pytest.raises(DefinitionError):
            FeatureView(**{**VIEW.__dict__, "name": name})
    with pytest.raises(DefinitionError):
        FeatureView(
            **{**VIEW.__dict__, "entity_keys": (name,), "key_types": StructType([StructField(name, StringType())])}
        )


def test_nanosecond_parquet_is_explained(spark: SparkSession, tmp_path: Path) -> None:
    path = tmp_path / "nanos.parquet"
    table = pa.Table.from_pandas(
        pd.DataFrame({"symbol": ["A"], "event_timestamp": [pd.Timestamp("2024-01-01", tz="UTC")]})
    )
    pq.write_table(
        table.cast(pa.schema([("symbol", pa.string()), ("event_timestamp", pa.timestamp("ns", "UTC"))])), path
    )
    with pytest.raises(ValidationError, match="coerce_timestamps='us'"):
        read_input(spark, str(path)).collect()
