"""Training sets: FeatureStoreFetchRepository.training_set against Feast's Spark offline store.

Generates bar-like feature rows (1-minute bars, or for the skewed case 2 of 100 symbols holding 80%
of the rows) and entity rows at random microsecond times, stores them once (Delta, through the save
repository), then per case times four things in one process and one ``local[2]`` session:
the floor (a plain scan of the same inputs), the same scan with both inputs hash-partitioned by the
join key (``colocate``: the shuffle any exact as-of join without driver collection must do, since
the stored table is not partitioned by key) and ours, each the fastest of ``--repeat`` runs, and
Feast's ``get_historical_features`` (once; a small warm-up case runs all three first). Each is
forced by the same order-independent fingerprint aggregate (row count + sum of per-row hashes over
every column and null flag), which also checks that ours and Feast's results are equal.
Feast gets ``--feast-timeout`` seconds per case (its jobs are cancelled after that).
Last line: ``RESULT training_set_speedup_vs_feast=<Feast/ours, TTL 1h case> floor_ratio=<ours/scan>``.

    .venv/bin/python bench/training_set.py [--quick] [--cases ttl,no_ttl,skew,scale] [--no-feast] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from spark_features.config import Config, SparkConfig
from spark_features.features.base import EVENT_TS, FeatureView
from spark_features.fetch.repository import FeatureStoreFetchRepository
from spark_features.session import build_session
from spark_features.store import FeatureStoreSaveRepository

ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)
FEATURES = StructType(
    [StructField(f, t, True) for f, t in (("close", DoubleType()), ("volume", LongType()), ("ret", DoubleType()))]
)
KEYS = StructType([StructField("symbol", StringType(), False)])


@dataclass(frozen=True)
class Case:
    name: str
    symbols: int
    rows_per_symbol: int
    entities: int
    ttl: timedelta | None
    hot_share: float = 0.0  # share of feature and entity rows held by the 2 hot symbols


def cases(quick: bool) -> list[Case]:
    symbols, rows, entities = (20, 2_000, 20_000) if quick else (100, 10_000, 100_000)
    hour = timedelta(hours=1)
    return [
        Case("ttl", symbols, rows, entities, hour),
        Case("no_ttl", symbols, rows, entities, None),
        Case("skew", symbols, rows, entities, hour, hot_share=0.8),
        Case("scale", symbols, rows * 10, entities * 10, hour),
    ]


def symbol_rows(spark: SparkSession, first: int, count: int, per_symbol: int, span_us: int, seed: int) -> DataFrame:
    """``per_symbol`` rows for each of ``count`` symbols, evenly spaced over ``span_us``."""
    step = max(1, span_us // per_symbol)
    start = int(ORIGIN.timestamp()) * 1_000_000
    idx = F.col("id") % per_symbol
    return spark.range(count * per_symbol).select(
        F.format_string("S%03d", (F.lit(first) + F.col("id") / per_symbol).cast("int")).alias("symbol"),
        F.timestamp_micros(F.lit(start) + idx * step).alias(EVENT_TS),
        (F.lit(100.0) + F.randn(seed)).alias("close"),
        (F.rand(seed + 1) * 1000).cast("long").alias("volume"),
        F.when(idx % 97 != 0, F.randn(seed + 2) / 100).alias("ret"),  # stored nulls
    )


def feature_rows(spark: SparkSession, case: Case) -> DataFrame:
    span_us = case.rows_per_symbol * 60_000_000
    total = case.symbols * case.rows_per_symbol
    if not case.hot_share:
        return symbol_rows(spark, 0, case.symbols, case.rows_per_symbol, span_us, 1)
    hot = int(total * case.hot_share / 2)
    cold = int(total * (1 - case.hot_share) / (case.symbols - 2))
    return symbol_rows(spark, 0, 2, hot, span_us, 1).unionByName(
        symbol_rows(spark, 2, case.symbols - 2, cold, span_us, 4)
    )


def entity_rows(spark: SparkSession, case: Case) -> DataFrame:
    span_us = case.rows_per_symbol * 60_000_000
    start = int(ORIGIN.timestamp()) * 1_000_000
    hot = F.rand(7) < case.hot_share
    symbol = F.when(hot, (F.rand(8) * 2).cast("int")).otherwise(
        F.lit(2 if case.hot_share else 0) + (F.rand(9) * (case.symbols - (2 if case.hot_share else 0))).cast("int")
    )
    return spark.range(case.entities).select(
        F.format_string("S%03d", symbol).alias("symbol"),
        F.timestamp_micros(F.lit(start) + (F.rand(10) * span_us).cast("long")).alias(EVENT_TS),
        (F.col("id") % 2).alias("label"),
    )


def fingerprint(df: DataFrame) -> tuple[int, int]:
    """Row count and sum of per-row hashes (null flags included): equal frames, equal prints."""
    row = F.xxhash64(*[F.col(c).isNull() for c in df.columns], *[F.col(c) for c in df.columns])
    got = df.agg(F.count(F.lit(1)), F.sum(row.cast("decimal(38,0)"))).first()
    assert got is not None
    return int(got[0]), int(got[1] or 0)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    out = fn()
    return time.perf_counter() - began, out


def feast_store(spark: SparkSession, workdir: Path, root: str, views: list[FeatureView]) -> Any:
    from feast import Entity, FeatureStore, Field, RepoConfig, ValueType
    from feast import FeatureView as FeastView
    from feast.infra.offline_stores.contrib.spark_offline_store.spark import SparkOfflineStoreConfig
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.table_format import DeltaFormat
    from feast.types import Float64, Int64

    config = RepoConfig(
        project="bench",
        registry=str(workdir / "registry.db"),
        provider="local",
        offline_store=SparkOfflineStoreConfig(),
        online_store=SqliteOnlineStoreConfig(path=str(workdir / "online.db")),
        entity_key_serialization_version=3,
    )
    store = FeatureStore(config=config)
    symbol = Entity(name="symbol", join_keys=["symbol"], value_type=ValueType.STRING)
    types = {"close": Float64, "volume": Int64, "ret": Float64}
    objects: list[Any] = [symbol]
    for view in views:
        source = SparkSource(
            name=f"{view.feast_name}_src",
            path=f"{root}/{view.name}/v{view.version}",
            table_format=DeltaFormat(),
            timestamp_field=EVENT_TS,
            date_partition_column="event_date",
        )
        fields = [Field(name=f, dtype=types[f]) for f in FEATURES.fieldNames()]
        objects.append(FeastView(name=view.feast_name, entities=[symbol], ttl=view.ttl, schema=fields, source=source))
    store.apply(objects)
    return store


def run_feast(spark: SparkSession, store: Any, entity: DataFrame, refs: list[str], timeout: float) -> Any:
    """Feast's fingerprint, or None when it did not finish within ``timeout`` seconds."""
    result: dict[str, Any] = {}
    group = f"feast-{time.monotonic_ns()}"

    def work() -> None:
        spark.sparkContext.setJobGroup(group, "feast get_historical_features", interruptOnCancel=True)
        try:
            job = store.get_historical_features(entity_df=entity, features=refs)
            result["print"] = fingerprint(job.to_spark_df().select(*entity.columns, *[r.split(":")[1] for r in refs]))
        except Exception as exc:  # cancelled, or Feast failed: reported, not hidden
            result["error"] = exc

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        spark.sparkContext.cancelJobGroup(group)
        worker.join(60)
        return None
    if "error" in result:
        raise result["error"]
    return result["print"]


def run_case(spark: SparkSession, workdir: Path, case: Case, args: argparse.Namespace) -> dict[str, Any]:
    """Store the case's data, then time the scan floor and ours (best of ``--repeat``) and Feast (once)."""
    root = str(workdir / "offline")
    view = FeatureView(f"bars_{case.name}", "1.0.0", ("symbol",), FEATURES, KEYS, ttl=case.ttl)
    FeatureStoreSaveRepository(spark, root).write(view, feature_rows(spark, case))
    entity_rows(spark, case).write.parquet(str(workdir / f"entities_{case.name}"))
    entity = spark.read.parquet(str(workdir / f"entities_{case.name}"))
    table = spark.read.format("delta").load(f"{root}/{view.name}/v{view.version}")
    refs = [f"{view.feast_name}:{f}" for f in FEATURES.fieldNames()]
    repo = FeatureStoreFetchRepository(spark, root)
    scans = [timed(partial(lambda t, e: (fingerprint(t), fingerprint(e)), table, entity)) for _ in range(args.repeat)]
    n = args.shuffle_partitions
    moved = (table.repartition(n, *KEYS.fieldNames()), entity.repartition(n, *KEYS.fieldNames()))
    colocates = [timed(partial(lambda t, e: (fingerprint(t), fingerprint(e)), *moved)) for _ in range(args.repeat)]
    ours = [timed(partial(lambda e, f: fingerprint(repo.training_set(e, f)), entity, refs)) for _ in range(args.repeat)]
    row: dict[str, Any] = {
        "scan": min(t for t, _ in scans),
        "colocate": min(t for t, _ in colocates),
        "ours": min(t for t, _ in ours),
        "feast": None,
    }
    row.update(rows=ours[0][1][0], equal=None)
    if not args.no_feast:
        store = feast_store(spark, workdir / case.name, root, [view])
        feast, feast_print = timed(partial(run_feast, spark, store, entity, refs, args.feast_timeout))
        if feast_print is not None:
            row.update(feast=feast, equal=feast_print == ours[0][1])
            if feast_print != ours[0][1]:
                raise SystemExit(f"case {case.name}: results differ: ours {ours[0][1]} feast {feast_print}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="20 symbols x 2,000 rows, 20,000 entity rows")
    parser.add_argument("--cases", default="ttl,no_ttl,skew,scale")
    parser.add_argument("--feast-timeout", type=float, default=600.0)
    parser.add_argument("--no-feast", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the scan and of ours; the fastest counts")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument("--driver-memory", default="4g", help="the local[2] JVM heap (Spark's default 1g is too small)")
    args = parser.parse_args()
    memory = {"spark.driver.memory": args.driver_memory}
    spark = build_session(
        Config(spark=SparkConfig(master="local[2]", shuffle_partitions=args.shuffle_partitions, extra=memory))
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench_training_set_"))
    results: dict[str, dict[str, Any]] = {}
    try:
        # warm the JIT and Feast's imports on a smaller case first (untimed)
        warmup = Case("warmup", 5, 500, 2_000, timedelta(hours=1)) if args.quick else cases(quick=True)[0]
        run_case(spark, workdir, replace(warmup, name="warmup"), args)
        for case in [c for c in cases(args.quick) if c.name in args.cases.split(",")]:
            row = results[case.name] = run_case(spark, workdir, case, args)
            ours, scan, feast = row["ours"], row["scan"], row["feast"]
            unfinished = f"did not finish in {args.feast_timeout:.0f}s"
            feast_text = "not run" if args.no_feast else f"{feast:.1f}s" if feast else unfinished
            speedup = (
                "n/a" if args.no_feast else f"{feast / ours:.1f}x" if feast else f">{args.feast_timeout / ours:.0f}x"
            )
            print(
                f"case {case.name}: {case.symbols} symbols x {case.rows_per_symbol} rows, {case.entities} entity rows, "
                f"ttl={case.ttl}, hot_share={case.hot_share}: rows={row['rows']} scan {scan:.2f}s ours {ours:.2f}s "
                f"feast {feast_text} speedup {speedup} floor_ratio {ours / scan:.2f} equal={row['equal']} "
                f"colocate {row['colocate']:.2f}s ({row['colocate'] / scan:.2f}x scan)",
                flush=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if "ttl" in results and "scale" in results:
        growth = results["scale"]["ours"] / results["ttl"]["ours"]
        print(f"scaling: 10x the data took {growth:.1f}x the time of the ttl case", flush=True)
    head = results.get("ttl") or next(iter(results.values()))
    speedup_text = f"{head['feast'] / head['ours']:.1f}" if head["feast"] else "nan"
    print(f"RESULT training_set_speedup_vs_feast={speedup_text} floor_ratio={head['ours'] / head['scan']:.2f}")


if __name__ == "__main__":
    main()
