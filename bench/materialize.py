"""Materialize: ours against Feast's own ``materialize`` (Spark compute engine), SQLite and Redis.

One process, one Spark session (local[2]), one Delta table written by the store: ``--entities``
(symbol, timeframe) entities with ``--rows-per-entity`` rows each and two double features. For each
online store, into fresh, separate key spaces:

- ours:  ``spark_features.online.materialize`` (latest per entity, encoded column-wise into Feast's
  storage format and written from the executors: SQLite ``executemany`` upserts, Redis Lua ``HSET``s);
- feast: ``FeatureStore.materialize`` with ``batch_engine: spark.engine`` on the same session;
- floor: the online store's own ``online_write_batch`` of the same latest rows from one process,
  in batches of 10k (only the write calls are timed; rows are built beforehand).

Python workers and both engines are warmed up first (untimed); ours and Feast's then run
``--repeat`` times in alternating order and the best time of each counts. Values of 1,000 sampled
entities are checked equal between ours and Feast's. Rates are entities per second (one online row
each). Last line:
``RESULT materialize_speedup_vs_feast_sqlite=<ratio> materialize_speedup_vs_feast_redis=<ratio>``.

    .venv/bin/python bench/materialize.py [--entities 1000000] [--repeat 2] [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import redis
from feast.utils import _convert_arrow_to_proto
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from spark_features.config import Config, FeastConfig, OfflineConfig, OnlineStoreConfig, SparkConfig
from spark_features.feast_provider import apply, feature_store, registered_view
from spark_features.features.base import EVENT_TS, FeatureView
from spark_features.fetch.latest import latest_per_entity
from spark_features.online import get_online, materialize
from spark_features.session import build_session
from spark_features.store import FeatureStoreSaveRepository
from spark_features.store.tables import read_table, table_uri

VIEW = FeatureView(
    name="bench_online",
    version="1.0.0",
    entity_keys=("symbol", "timeframe"),
    key_types=StructType([StructField("symbol", StringType(), False), StructField("timeframe", StringType(), False)]),
    features=StructType([StructField("f1", DoubleType(), True), StructField("f2", DoubleType(), True)]),
)
WARMUP = FeatureView(**{**{k: getattr(VIEW, k) for k in VIEW.__dataclass_fields__}, "name": "bench_warmup"})
START = datetime(2024, 1, 1, tzinfo=UTC)
TIMEFRAMES = ("1m", "5m", "1h", "1d")
FEAST_SESSION_KEYS = ("spark.sql.parser.quotedRegexColumnNames", "spark.sql.execution.arrow.pyspark.enabled")


def feature_rows(spark: SparkSession, entities: int, per_entity: int) -> DataFrame:
    """Entity ``e`` is (``S<e // 4>``, ``TIMEFRAMES[e % 4]``); row ``r`` of it is at minute ``r``."""
    epoch = int(START.timestamp())
    entity, row = F.col("id") % entities, (F.col("id") / entities).cast("long")
    timeframes = F.array(*[F.lit(t) for t in TIMEFRAMES])
    return spark.range(entities * per_entity).select(
        F.format_string("S%07d", (entity / len(TIMEFRAMES)).cast("int")).alias("symbol"),
        F.element_at(timeframes, (entity % len(TIMEFRAMES) + 1).cast("int")).alias("timeframe"),
        F.timestamp_seconds(F.lit(epoch) + row * 60 + entity % 59).alias(EVENT_TS),
        F.rand(1).alias("f1"),
        F.rand(2).alias("f2"),
    )


def config(work: Path, name: str, online: OnlineStoreConfig) -> Config:
    return Config(
        spark=SparkConfig(master="local[2]", shuffle_partitions=8),
        offline=OfflineConfig(root=str(work / "offline")),
        feast=FeastConfig(repo_path=str(work), project=name, registry=str(work / f"{name}.db"), online_store=online),
        project_root=work,
    )


def timed(fn: Callable[[], Any]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def ours_materialize(spark: SparkSession, cfg: Config, end: datetime, view: FeatureView = VIEW) -> float:
    apply(feature_store(cfg), [view], cfg)  # registered beforehand, as for Feast's run
    return timed(lambda: materialize(spark, cfg, [view], START - timedelta(seconds=1), end))


def feast_materialize(spark: SparkSession, cfg: Config, end: datetime, view: FeatureView = VIEW) -> float:
    store = feature_store(cfg)  # batch_engine spark.engine; Feast reuses the active session
    apply(store, [view], cfg)
    saved = {k: spark.conf.get(k, None) for k in FEAST_SESSION_KEYS}
    try:
        return timed(lambda: store.materialize(START - timedelta(seconds=1), end, [view.feast_name]))
    finally:
        for key, value in saved.items():
            spark.conf.unset(key) if value is None else spark.conf.set(key, value)


def floor_write(spark: SparkSession, cfg: Config, end: datetime) -> float:
    """The store's own bulk write of the same latest rows, from this process, batches of 10k
    (Feast's rows are built beforehand, untimed, by Feast's own Arrow -> proto conversion)."""
    store = feature_store(cfg)
    apply(store, [VIEW], cfg)
    view = registered_view(store, VIEW)
    join_keys = {e.name: e.dtype.to_value_type() for e in view.entity_columns}
    provider = store._get_provider()
    stored = read_table(spark, table_uri(cfg.offline_root, VIEW.name, VIEW.version)).drop("event_date")
    latest = latest_per_entity(stored, VIEW.entity_keys, START - timedelta(seconds=1), end)
    seconds = 0.0
    for batch in latest.toArrow().to_batches(max_chunksize=10_000):
        rows = _convert_arrow_to_proto(batch, view, join_keys)
        began = time.perf_counter()
        provider.online_write_batch(store.config, view, rows, None)
        seconds += time.perf_counter() - began
    return seconds


def same_values(ours: Config, theirs: Config, entities: int) -> None:
    sample = random.Random(7).sample(range(entities), min(1000, entities))
    rows = [{"symbol": f"S{i // len(TIMEFRAMES):07d}", "timeframe": TIMEFRAMES[i % len(TIMEFRAMES)]} for i in sample]
    refs = ["bench_online:f1", "bench_online:f2"]
    a, b = get_online(feature_store(ours), rows, refs), get_online(feature_store(theirs), rows, refs)
    if a != b or any(v is None for v in a["f1"]):
        raise SystemExit(f"online values differ between ours and Feast's materialize: {json.dumps([a, b])[:500]}")


def start_redis(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*args, "--dir", str(work)], stdout=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc, f"127.0.0.1:{port}"
        except redis.ConnectionError:
            time.sleep(0.1)
    raise SystemExit("redis-server did not start")


def warm_python_workers(spark: SparkSession) -> None:
    """One Python worker per core with Feast imported, so neither engine pays for starting them."""
    cores = spark.sparkContext.defaultParallelism

    def load(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for module in ("feast.infra.online_stores.redis", "feast.infra.online_stores.sqlite"):
            importlib.import_module(module)
        importlib.import_module("spark_features.online_writer")

        time.sleep(2)  # keep every core busy, so that each task gets its own worker
        yield pa.RecordBatch.from_pydict({"n": [sum(b.num_rows for b in batches)]})

    spark.range(0, cores, 1, cores).mapInArrow(load, "n long").collect()


def measure(
    spark: SparkSession, online: Callable[[str], Config], flush: Callable[[], object], args: argparse.Namespace
) -> float:
    """Best of ``--repeat`` alternating runs of each engine, then the floor; returns ours / Feast's rate.
    ``online(name)`` is a config with a fresh key space (SQLite file or Redis project) called ``name``."""
    warm_end = (
        FeatureStoreSaveRepository.from_config(spark, online("setup")).write(WARMUP, feature_rows(spark, 100, 2)).end
    )
    assert warm_end is not None
    # Untimed warm-up of both engines (Feast's and our executor code paths, JIT, Delta log caches).
    ours_materialize(spark, online("warm_ours"), warm_end, WARMUP)
    feast_materialize(spark, online("warm_feast"), warm_end, WARMUP)
    ours: list[float] = []
    feast: list[float] = []
    for run in range(args.repeat):
        ours_cfg, feast_cfg = online(f"ours{run}"), online(f"feast{run}")
        engines = [(ours, ours_materialize, ours_cfg), (feast, feast_materialize, feast_cfg)]
        for times, engine, cfg in engines if run % 2 == 0 else engines[::-1]:
            times.append(engine(spark, cfg, args.end))
        same_values(ours_cfg, feast_cfg, args.entities)
        flush()
        print(f"run {run}: ours {ours[-1]:.1f}s  feast {feast[-1]:.1f}s", flush=True)
    floor = floor_write(spark, online("floor"), args.end)
    flush()
    best = (("ours", min(ours)), ("feast", min(feast)), ("floor", floor))
    entities: int = args.entities
    rates = {name: entities / seconds for name, seconds in best}
    kind = online("x").feast.online_store.type
    print(
        f"{kind}: ours {min(ours):.1f}s ({rates['ours']:,.0f}/s)  feast {min(feast):.1f}s ({rates['feast']:,.0f}/s)  "
        f"floor {floor:.1f}s ({rates['floor']:,.0f}/s, one process)",
        flush=True,
    )
    return rates["ours"] / rates["feast"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--rows-per-entity", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20,000 entities")
    args = parser.parse_args()
    if args.quick:
        args.entities = 20_000
    spark = build_session(Config(spark=SparkConfig(master="local[2]", shuffle_partitions=8)))
    work = Path(tempfile.mkdtemp(prefix="bench_materialize_"))
    redis_proc, redis_address = start_redis(work)
    try:
        base = config(work, "setup", OnlineStoreConfig())
        data = feature_rows(spark, args.entities, args.rows_per_entity)
        result = FeatureStoreSaveRepository.from_config(spark, base).write(VIEW, data)
        args.end = result.end
        print(f"{args.entities:,} entities, {result.rows:,} rows in {result.uri}", flush=True)
        warm_python_workers(spark)
        flush = redis.Redis.from_url(f"redis://{redis_address}").flushall  # keep Redis' memory bounded

        def sqlite(name: str) -> Config:
            return config(work, f"lite_{name}", OnlineStoreConfig(type="sqlite", path=str(work / f"{name}.sqlite")))

        def redis_db(name: str) -> Config:
            return config(work, f"redis_{name}", OnlineStoreConfig(type="redis", connection_string=redis_address))

        ratio = {"sqlite": measure(spark, sqlite, flush, args), "redis": measure(spark, redis_db, flush, args)}
        print(" ".join(["RESULT", *(f"materialize_speedup_vs_feast_{k}={v:.2f}" for k, v in ratio.items())]))
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
