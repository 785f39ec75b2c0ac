"""Store write overhead: FeatureStoreSaveRepository.write against a plain partitioned df.write.

Both write the same cached DataFrame of feature rows to fresh Delta tables in one process; ours
also validates (every bad-input rule, duplicates included), sorts and records version info.
Last line: ``RESULT store_write_overhead=<ours / plain>``.

    .venv/bin/python bench/store_write.py [--rows 3000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from spark_features.config import Config, SparkConfig
from spark_features.features.base import EVENT_TS, FeatureView
from spark_features.session import build_session
from spark_features.store import FeatureStoreSaveRepository

FEATURES = ("f1", "f2", "f3", "f4")
VIEW = FeatureView(
    name="bench_write",
    version="1.0.0",
    entity_keys=("symbol", "timeframe"),
    key_types=StructType([StructField("symbol", StringType(), False), StructField("timeframe", StringType(), False)]),
    features=StructType([StructField(f, DoubleType(), True) for f in FEATURES]),
)


def feature_rows(spark: SparkSession, rows: int, symbols: int) -> DataFrame:
    start = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
    per_symbol = rows // symbols
    return spark.range(symbols * per_symbol).select(
        F.format_string("SYM%04d", (F.col("id") % symbols).cast("int")).alias("symbol"),
        F.lit("1m").alias("timeframe"),
        F.timestamp_seconds(F.lit(start) + (F.col("id") / symbols).cast("long") * 60).alias(EVENT_TS),
        *[F.rand(i).alias(name) for i, name in enumerate(FEATURES)],
    )


def timed(fn: object) -> float:
    began = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    spark = build_session(Config(spark=SparkConfig(master="local[2]", shuffle_partitions=8)))
    data = feature_rows(spark, args.rows, args.symbols).cache()
    rows = data.count()
    workdir = Path(tempfile.mkdtemp(prefix="bench_store_"))
    ours, plain = [], []
    try:
        for i in range(args.repeat):
            repo = FeatureStoreSaveRepository(spark, str(workdir / f"ours{i}"))
            plain_path = str(workdir / f"plain{i}")
            plain.append(
                timed(
                    lambda p=plain_path: (
                        data.withColumn("event_date", F.to_date(EVENT_TS))
                        .write.format("delta")
                        .partitionBy("event_date")
                        .save(p)
                    )
                )
            )
            ours.append(timed(lambda r=repo: r.write(VIEW, data)))
            print(f"run {i}: plain {plain[-1]:.2f}s ours {ours[-1]:.2f}s", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ratio = statistics.median(ours) / statistics.median(plain)
    print(f"rows={rows} plain_median={statistics.median(plain):.2f}s ours_median={statistics.median(ours):.2f}s")
    print(f"RESULT store_write_overhead={ratio:.3f}")


if __name__ == "__main__":
    main()
