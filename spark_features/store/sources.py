"""Source tables (market bars): write the generated bars, read user-supplied bars schema-checked."""

from __future__ import annotations

from datetime import datetime

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_features.errors import ValidationError
from spark_features.features.bars import BAR_SCHEMA
from spark_features.features.base import EVENT_DATE, EVENT_TS
from spark_features.timeutil import lit_ts


def write_bars(bars: DataFrame, uri: str) -> None:
    """Write bars as a Delta table partitioned by event date (replacing the dates present)."""
    (
        bars.withColumn(EVENT_DATE, F.to_date(F.col(EVENT_TS)))
        .repartition(EVENT_DATE)
        .sortWithinPartitions("symbol", "timeframe", EVENT_TS)
        .write.format("delta")
        .mode("overwrite")
        .option("partitionOverwriteMode", "dynamic")
        .partitionBy(EVENT_DATE)
        .save(uri)
    )


def read_input(spark: SparkSession, path: str) -> DataFrame:
    """Read a Parquet, CSV (header, inferred types) or Delta input by its suffix or content.

    Parquet files written with nanosecond timestamps (pandas' default) cannot be read by Spark as
    timestamps; that is reported with the fix instead of Spark's parser error.
    """
    uri = path
    try:
        if DeltaTable.isDeltaTable(spark, uri):
            return spark.read.format("delta").load(uri)
        if path.endswith(".csv"):
            return spark.read.option("header", True).option("inferSchema", True).csv(uri)
        return spark.read.parquet(uri)
    except AnalysisException as exc:
        if "NANOS" in str(exc):
            raise ValidationError(
                path,
                "*",
                "Parquet TIMESTAMP(NANOS) is not readable by Spark; rewrite with "
                "pyarrow.parquet.write_table(..., coerce_timestamps='us') or pandas to_parquet(coerce_timestamps='us')",
                0,
                [],
            ) from exc
        raise


def read_bars(spark: SparkSession, path: str, start: datetime | None = None, end: datetime | None = None) -> DataFrame:
    """Bars from ``path`` with the bar schema checked, optionally restricted to ``[start, end)``."""
    bars = read_input(spark, path)
    actual = {f.name: f.dataType for f in bars.schema.fields}
    for field in BAR_SCHEMA.fields:
        if field.name not in actual:
            raise ValidationError(path, field.name, "missing bar column", 0, [])
        if actual[field.name] != field.dataType:
            rule = f"bar column type {actual[field.name].simpleString()} != {field.dataType.simpleString()}"
            raise ValidationError(path, field.name, rule, 0, [])
    if start is not None:
        bars = bars.filter(F.col(EVENT_TS) >= lit_ts(start))
        if EVENT_DATE in actual:
            bars = bars.filter(F.col(EVENT_DATE) >= F.lit(start.date()))
    if end is not None:
        bars = bars.filter(F.col(EVENT_TS) < lit_ts(end))
        if EVENT_DATE in actual:
            bars = bars.filter(F.col(EVENT_DATE) <= F.lit(end.date()))
    return bars.select(*BAR_SCHEMA.fieldNames())
