"""Market bars: the synthetic generator, the bar schema and resampling to coarser timeframes.

Bars are keyed by (``symbol``, ``timeframe``) and stamped with their *open* time in
``event_timestamp``. Features computed from a bar are stamped with the bar's *close* time (open +
timeframe), because that is when their values become known; see ``bar_close``.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType, TimestampType

from spark_features.errors import DefinitionError

BAR_SCHEMA = StructType(
    [
        StructField("symbol", StringType(), False),
        StructField("timeframe", StringType(), False),
        StructField("event_timestamp", TimestampType(), False),
        StructField("open", DoubleType(), False),
        StructField("high", DoubleType(), False),
        StructField("low", DoubleType(), False),
        StructField("close", DoubleType(), False),
        StructField("volume", DoubleType(), False),
    ]
)
TIMEFRAMES: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}


def timeframe_seconds(timeframe: str) -> int:
    if timeframe not in TIMEFRAMES:
        raise DefinitionError(f"unknown timeframe {timeframe!r}; known: {sorted(TIMEFRAMES)}")
    return int(TIMEFRAMES[timeframe].total_seconds())


def _unit_uniform(seed: int, salt: int) -> Column:
    """Deterministic U(0,1) per (seed, symbol, minute), independent of partitioning."""
    bits = F.xxhash64(F.lit(seed), F.lit(salt), F.col("symbol"), F.col("minute"))
    return (F.abs(bits % F.lit(1 << 30)).cast("double") + F.lit(0.5)) / F.lit(float(1 << 30))


def generate_bars(spark: SparkSession, symbols: int, start: datetime, end: datetime, seed: int = 7) -> DataFrame:
    """Deterministic 1-minute OHLCV bars for ``symbols`` symbols over ``[start, end)``.

    A geometric random walk per symbol (Box-Muller normals from hashes of seed, symbol and minute, so
    the values do not depend on partitioning), with log-normal volume.
    """
    minutes = int((end - start).total_seconds() // 60)
    if symbols <= 0 or minutes <= 0:
        raise DefinitionError(f"generate_bars needs symbols > 0 and start < end, got {symbols}, {start}..{end}")
    start_epoch = int(start.timestamp())
    normal = F.sqrt(-2.0 * F.log(_unit_uniform(seed, 1))) * F.cos(2 * math.pi * _unit_uniform(seed, 2))
    by_symbol = Window.partitionBy("symbol").orderBy("minute").rowsBetween(Window.unboundedPreceding, 0)
    base = F.lit(3.0) + F.abs(F.xxhash64(F.lit(seed), F.col("symbol")) % 300).cast("double") / 100.0
    return (
        spark.range(symbols * minutes)
        .select(
            F.format_string("SYM%04d", (F.col("id") / minutes).cast("int")).alias("symbol"),
            (F.col("id") % minutes).alias("minute"),
        )
        .withColumn("step", normal * F.lit(0.0008))
        .withColumn("log_close", base + F.sum("step").over(by_symbol))
        .select(
            F.col("symbol"),
            F.lit("1m").alias("timeframe"),
            F.timestamp_seconds(F.lit(start_epoch) + F.col("minute") * 60).alias("event_timestamp"),
            F.exp(F.col("log_close") - F.col("step")).alias("open"),
            F.exp(F.col("log_close")).alias("close"),
            (F.abs(normal) * F.lit(0.0003)).alias("wick"),
            F.exp(F.lit(7.0) + F.lit(0.5) * normal).alias("volume"),
        )
        .select(
            "symbol",
            "timeframe",
            "event_timestamp",
            "open",
            (F.greatest("open", "close") * (F.lit(1.0) + F.col("wick"))).alias("high"),
            (F.least("open", "close") * (F.lit(1.0) - F.col("wick"))).alias("low"),
            "close",
            F.round("volume", 0).alias("volume"),
        )
    )


def resample(bars: DataFrame, timeframe: str) -> DataFrame:
    """Aggregate 1-minute bars into ``timeframe`` bars aligned to UTC epoch multiples."""
    seconds = timeframe_seconds(timeframe)
    bucket = F.timestamp_seconds(F.floor(F.unix_seconds(F.col("event_timestamp")) / seconds) * seconds).alias(
        "event_timestamp"
    )
    return (
        bars.filter(F.col("timeframe") == "1m")
        .groupBy("symbol", bucket)
        .agg(
            F.min_by("open", "event_timestamp").alias("open"),
            F.max("high").alias("high"),
            F.min("low").alias("low"),
            F.max_by("close", "event_timestamp").alias("close"),
            F.sum("volume").alias("volume"),
        )
        .select(
            "symbol", F.lit(timeframe).alias("timeframe"), "event_timestamp", "open", "high", "low", "close", "volume"
        )
    )


def multi_timeframe(bars: DataFrame, timeframes: tuple[str, ...]) -> DataFrame:
    """The 1-minute bars plus their resamplings, one DataFrame keyed by (symbol, timeframe)."""
    one_minute = bars.filter(F.col("timeframe") == "1m").select(*BAR_SCHEMA.fieldNames())
    frames = [one_minute if tf == "1m" else resample(one_minute, tf) for tf in timeframes]
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out


def bar_close(timestamp: str = "event_timestamp") -> Column:
    """Close time of a bar: open time + the bar's timeframe (when its values become known)."""
    seconds = F.when(F.col("timeframe") == "1m", 60)
    for name, delta in TIMEFRAMES.items():
        seconds = seconds.when(F.col("timeframe") == name, int(delta.total_seconds()))
    return F.timestamp_seconds(F.unix_seconds(F.col(timestamp)) + seconds)
