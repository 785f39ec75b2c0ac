"""Point-in-time training sets: one hand-built case per rule of DESIGN.md's as-of semantics, the
skew buckets, bad input, ``latest`` and the CLI job. Feature tables are written by the save
repository into ``tmp_path``; expected frames are typed out by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import (
    DataType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampNTZType,
    TimestampType,
)

from spark_features.cli import build_parser, cmd_training_set
from spark_features.config import Config, OfflineConfig
from spark_features.errors import FeatureNotFoundError, ValidationError
from spark_features.features.base import FeatureView
from spark_features.fetch.repository import FeatureStoreFetchRepository, write_training_set
from spark_features.store import FeatureStoreSaveRepository


def t(minute: float, hour: int = 10) -> datetime:
    """2024-01-02 ``hour``:00 UTC plus ``minute`` minutes (fractions allowed)."""
    return datetime(2024, 1, 2, hour, tzinfo=UTC) + timedelta(minutes=minute)


def schema(*fields: tuple[str, DataType] | StructField) -> StructType:
    return StructType([f if isinstance(f, StructField) else StructField(f[0], f[1], True) for f in fields])


def keys(*names: str) -> StructType:
    return StructType([StructField(n, StringType(), False) for n in names])


TS = ("event_timestamp", TimestampType())
PRICES = FeatureView(
    "prices", "1.0.0", ("symbol",), schema(("close", DoubleType()), ("volume", LongType())), keys("symbol"),
    ttl=timedelta(hours=1), has_created_timestamp=True,
)  # fmt: skip
BARS = FeatureView("bars", "1.0.0", ("symbol", "timeframe"), schema(("x", DoubleType())), keys("symbol", "timeframe"))
FLAGS = FeatureView(
    "flags", "2.0.0", ("symbol",), schema(("flag", StringType())), keys("symbol"), ttl=timedelta(minutes=10)
)
ENTITY = schema(("symbol", StringType()), TS, ("label", LongType()))


def store(spark: SparkSession, root: Path, view: FeatureView, rows: list[tuple[object, ...]]) -> None:
    FeatureStoreSaveRepository(spark, str(root)).write(view, spark.createDataFrame(rows, view.stored_schema))


def fetch(spark: SparkSession, root: Path, buckets: int | None = 1) -> FeatureStoreFetchRepository:
    return FeatureStoreFetchRepository(spark, str(root), time_buckets=buckets)


def check(actual: DataFrame, expected: DataFrame) -> None:
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.fixture()
def prices(spark: SparkSession, tmp_path: Path) -> Path:
    store(spark, tmp_path, PRICES, [
        ("A", t(0), t(1), 1.0, 10),
        ("A", t(30), t(31), 2.0, 20),   # tie on event time: created later wins
        ("A", t(30), t(35), 3.0, 30),
        ("A", t(40), t(41), None, None),  # a stored null stays null
        ("B", t(0), t(1), 5.0, 50),
    ])  # fmt: skip
    return tmp_path


@pytest.mark.parametrize("buckets", [1, 3, None])
def test_ttl_bounds_ties_nulls_and_early_rows(spark: SparkSession, prices: Path, buckets: int | None) -> None:
    entity = spark.createDataFrame([
        ("A", t(-0.001), 1),  # before any feature row
        ("A", t(0), 2),  # equal event time: included
        ("A", t(30), 3),  # tie at 10:30: created 10:35 wins
        ("A", t(39), 4),
        ("A", t(40), 5),  # stored nulls
        ("B", t(60), 6),  # exactly ttl after 10:00: included
        ("B", t(60) + timedelta(microseconds=1), 7),  # 1 us past the ttl: expired
        ("C", t(60), 8),  # unknown key
        (None, t(60), 9),  # null key: matches nothing
    ], ENTITY)  # fmt: skip
    result = fetch(spark, prices, buckets).training_set(entity, ["prices:close", "prices:volume"])
    expected = spark.createDataFrame([
        ("A", t(-0.001), 1, None, None), ("A", t(0), 2, 1.0, 10), ("A", t(30), 3, 3.0, 30),
        ("A", t(39), 4, 3.0, 30), ("A", t(40), 5, None, None), ("B", t(60), 6, 5.0, 50),
        ("B", t(60) + timedelta(microseconds=1), 7, None, None), ("C", t(60), 8, None, None),
        (None, t(60), 9, None, None),
    ], schema(*ENTITY, ("close", DoubleType()), ("volume", LongType())))  # fmt: skip
    check(result, expected)


def test_duplicate_entity_rows_are_kept(spark: SparkSession, prices: Path) -> None:
    entity = spark.createDataFrame([("A", t(5), 1), ("A", t(5), 1), ("A", t(5), 2)], ENTITY)
    result = fetch(spark, prices).training_set(entity, ["prices:close"])
    expected = spark.createDataFrame(
        [("A", t(5), 1, 1.0), ("A", t(5), 1, 1.0), ("A", t(5), 2, 1.0)], schema(*ENTITY, ("close", DoubleType()))
    )
    check(result, expected)


def test_empty_entity_frame(spark: SparkSession, prices: Path) -> None:
    result = fetch(spark, prices, None).training_set(spark.createDataFrame([], ENTITY), ["prices:volume"])
    check(result, spark.createDataFrame([], schema(*ENTITY, ("volume", LongType()))))


def test_multi_column_keys_never_mix(spark: SparkSession, tmp_path: Path) -> None:
    # ("s1", "15m") and ("s11", "5m") concatenate to the same string
    store(spark, tmp_path, BARS, [("s1", "15m", t(0), 1.0), ("s11", "5m", t(1), 2.0), ("s1", "5m", t(2), 3.0)])
    entity_schema = schema(("symbol", StringType()), ("timeframe", StringType()), TS)
    entity = spark.createDataFrame([("s1", "15m", t(5)), ("s11", "5m", t(5)), ("s11", "15m", t(5))], entity_schema)
    expected = spark.createDataFrame(
        [("s1", "15m", t(5), 1.0), ("s11", "5m", t(5), 2.0), ("s11", "15m", t(5), None)],
        schema(*entity_schema, ("x", DoubleType())),
    )
    check(fetch(spark, tmp_path).training_set(entity, ["bars:x"]), expected)


@pytest.mark.parametrize("buckets", [1, 4])
def test_several_views_with_different_keys_and_ttls(
    spark: SparkSession, prices: Path, buckets: int, tmp_path: Path
) -> None:
    store(spark, tmp_path, BARS, [("A", "1m", t(-600), 7.0), ("A", "5m", t(20), 8.0)])  # 10 hours before: no TTL
    store(spark, tmp_path, FLAGS, [("A", t(0), "up"), ("A", t(25), "down")])
    entity = spark.createDataFrame(
        [("A", "1m", t(5), 1), ("A", "5m", t(35), 2), ("A", "5m", t(36), 3), ("B", "1m", t(5), 4)],
        schema(("symbol", StringType()), ("timeframe", StringType()), TS, ("label", LongType())),
    )
    refs = ["flags:flag", "prices:close", "bars:x", "prices_v1_0_0:volume"]
    result = fetch(spark, tmp_path, buckets).training_set(entity, refs, full_feature_names=True)
    names = ["flags_v2_0_0__flag", "prices_v1_0_0__close", "bars_v1_0_0__x", "prices_v1_0_0__volume"]
    types = [StringType(), DoubleType(), DoubleType(), LongType()]
    expected = spark.createDataFrame([
        ("A", "1m", t(5), 1, "up", 1.0, 7.0, 10),
        ("A", "5m", t(35), 2, "down", 3.0, 8.0, 30),  # flag from 10:25 is exactly 10 minutes old
        ("A", "5m", t(36), 3, None, 3.0, 8.0, 30),
        ("B", "1m", t(5), 4, None, 5.0, None, 50),
    ], schema(*entity.schema, *zip(names, types, strict=True)))  # fmt: skip
    check(result, expected)


@pytest.mark.parametrize("buckets", [1, 4])
def test_known_at_mode(spark: SparkSession, tmp_path: Path, buckets: int) -> None:
    store(spark, tmp_path, PRICES, [
        ("A", t(0), t(1), 1.0, 1),
        ("A", t(5), t(6), 2.0, 2),  # known at 10:06
        ("A", t(1), t(12), 3.0, 3),  # an older event, known last (at 10:12): 10:05 still wins
        ("A", t(8), t(20), 4.0, 4),  # the latest event, known at 10:20
    ])  # fmt: skip
    entity = spark.createDataFrame([("A", t(0), 1), ("A", t(7), 2), ("A", t(12), 3), ("A", t(20), 4)], ENTITY)
    repo = fetch(spark, tmp_path, buckets)
    out = schema(*ENTITY, ("close", DoubleType()))
    known = [("A", t(0), 1, None), ("A", t(7), 2, 2.0), ("A", t(12), 3, 2.0), ("A", t(20), 4, 4.0)]
    check(repo.training_set(entity, ["prices:close"], known_at=True), spark.createDataFrame(known, out))
    hindsight = [("A", t(0), 1, 1.0), ("A", t(7), 2, 2.0), ("A", t(12), 3, 4.0), ("A", t(20), 4, 4.0)]
    check(repo.training_set(entity, ["prices:close"]), spark.createDataFrame(hindsight, out))


@pytest.mark.parametrize("buckets", [1, 5, 64, None])
def test_skewed_keys(spark: SparkSession, tmp_path: Path, buckets: int | None) -> None:
    """A hot key with 90% of the rows, history before the first entity row, entity rows in buckets
    with and without feature rows: every bucketing gives the rows of the rule (value = minute of the
    latest row at or before the entity)."""
    hot = [("H", t(m), t(m), float(m), m) for m in range(-300, 300, 3) if not 100 <= m < 200]  # history too
    cold = [(s, t(m), t(m), float(m), m) for s in ("C1", "C2") for m in (0, 150)]
    store(spark, tmp_path, replace(PRICES, ttl=None, definition_hash=""), hot + cold)
    minutes = [-1, 0, 1, 50, 99, 100, 150, 199, 200, 201, 299, 400]
    rows = [("H", t(m), i) for i, m in enumerate(minutes) for _ in range(9)] + [("C1", t(160), 99)]
    entity = spark.createDataFrame(rows, ENTITY)

    def latest(symbol: str, minute: int) -> int | None:
        stored = [r[4] for r in hot + cold if r[0] == symbol and r[1] <= t(minute)]
        return max(stored) if stored else None

    expected = spark.createDataFrame(
        [(s, ts, i, latest(s, int((ts - t(0)).total_seconds() // 60))) for s, ts, i in rows],
        schema(*ENTITY, ("volume", LongType())),
    )
    repo = fetch(spark, tmp_path, buckets)
    check(repo.training_set(entity, ["prices:volume"]), expected)
    stats = {"rows": len(rows), "hottest": len(rows) - 1, "lo": 0, "hi": 10**9}
    assert fetch(spark, tmp_path, None)._buckets(stats, t(0), t(1)).count > 2  # skew detected


def test_integer_keys_of_other_widths_are_compared_as_long(spark: SparkSession, tmp_path: Path) -> None:
    ids = FeatureView("ids", "1.0.0", ("id",), schema(("x", DoubleType())), StructType([StructField("id", LongType())]))
    store(spark, tmp_path, ids, [(7, t(0), 1.5), (8, t(0), 2.5)])
    entity = spark.createDataFrame([(7, t(1)), (9, t(1))], "id int, event_timestamp timestamp")
    expected = spark.createDataFrame([(7, t(1), 1.5), (9, t(1), None)], "id int, event_timestamp timestamp, x double")
    check(fetch(spark, tmp_path).training_set(entity, ["ids:x"]), expected)  # the entity's int column is kept
    as_text = spark.createDataFrame([("7", t(1))], "id string, event_timestamp timestamp")
    with pytest.raises(ValidationError, match=r"'id'.*string != bigint"):
        fetch(spark, tmp_path).training_set(as_text, ["ids:x"])


def test_versions_and_latest(spark: SparkSession, prices: Path) -> None:
    newer = replace(PRICES, version="2.0.0", definition_hash="")
    store(spark, prices, newer, [("A", t(0), t(0), 100.0, 1)])
    entity = spark.createDataFrame([("A", t(50), 1)], ENTITY)
    repo = fetch(spark, prices)
    both = repo.training_set(entity, ["prices:close", "prices_v1_0_0:volume"])
    check(
        both,
        spark.createDataFrame(
            [("A", t(50), 1, 100.0, None)], schema(*ENTITY, ("close", DoubleType()), ("volume", LongType()))
        ),
    )
    latest = repo.latest(["prices_v1_0_0"], as_of=t(35))["prices"]
    expected = [("A", t(30), t(35), 3.0, 30), ("B", t(0), t(1), 5.0, 50)]
    check(latest, spark.createDataFrame(expected, PRICES.stored_schema))
    assert repo.latest(["prices_v1_0_0"], as_of=t(35), start=t(0))["prices"].count() == 1


@pytest.mark.parametrize(
    ("frame", "refs", "error", "column"),
    [
        ("no_key", ["prices:close"], ValidationError, "symbol"),
        ("no_ts", ["prices:close"], ValidationError, "event_timestamp"),
        ("naive", ["prices:close"], ValidationError, "event_timestamp"),
        ("null_ts", ["prices:close"], ValidationError, "event_timestamp"),
        ("ok", ["nope:close"], FeatureNotFoundError, "nope"),
        ("ok", ["prices:nope"], FeatureNotFoundError, "nope"),
        ("ok", ["prices"], FeatureNotFoundError, "prices"),
        ("ok", "my_service", FeatureNotFoundError, "my_service"),
        ("ok", ["prices:close", "prices_v1_0_0:close"], ValidationError, "close"),
        ("label_clash", ["prices:close"], ValidationError, "close"),
    ],
)
def test_bad_input_names_the_problem(
    spark: SparkSession, prices: Path, frame: str, refs: list[str] | str, error: type[Exception], column: str
) -> None:
    symbol, naive = ("symbol", StringType()), ("event_timestamp", TimestampNTZType())
    frames = {
        "no_key": spark.createDataFrame([(t(0),)], schema(TS)),
        "no_ts": spark.createDataFrame([("A",)], schema(symbol)),
        "naive": spark.createDataFrame([("A", datetime(2024, 1, 2))], schema(symbol, naive)),
        "null_ts": spark.createDataFrame([("A", None), ("Q", None), ("B", t(0))], schema(symbol, TS)),
        "ok": spark.createDataFrame([("A", t(0))], schema(symbol, TS)),
        "label_clash": spark.createDataFrame([("A", t(0), 1.0)], schema(symbol, TS, ("close", DoubleType()))),
    }
    with pytest.raises(error, match=column) as info:
        fetch(spark, prices).training_set(frames[frame], refs)
    if frame == "null_ts":
        assert isinstance(info.value, ValidationError)
        assert (info.value.count, sorted(info.value.samples)) == (2, ["symbol=A", "symbol=Q"])
    if frame == "naive":
        assert "TIMESTAMP_NTZ" in str(info.value)


def test_training_set_job_and_cli(spark: SparkSession, prices: Path, test_config: Config) -> None:
    config = replace(test_config, offline=OfflineConfig(root=str(prices)))
    entities = str(prices / "entities.csv")
    (prices / "entities.csv").write_text(
        "symbol,event_timestamp,label\nA,2024-01-02T10:31:00Z,1\nB,2024-01-02T10:05:00Z,2\n"
    )
    output = str(prices / "out")
    summary = write_training_set(spark, config, entities, ["prices:close"], output, full_feature_names=True)
    assert (summary["rows"], summary["columns"]) == (2, ["symbol", "event_timestamp", "label", "prices_v1_0_0__close"])
    got = {(r.symbol, r.prices_v1_0_0__close) for r in spark.read.parquet(output).collect()}
    assert got == {("A", 3.0), ("B", 5.0)}
    args = build_parser().parse_args(
        [
            "training-set",
            "--entities",
            entities,
            "--features",
            "prices:close,prices:volume",
            "--output",
            output,
            "--known-at",
        ]
    )
    assert (args.run, args.known_at, args.full_feature_names) == (cmd_training_set, True, False)
