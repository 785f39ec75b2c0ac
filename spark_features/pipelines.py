"""One function per job. Each takes the SparkSession and the config and returns a JSON-able summary,
so a notebook can call the same thing the ``jobs/*.py`` entries run."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_features.backfill import CHUNK_SIZES, plan_chunks, run_chunks
from spark_features.config import Config
from spark_features.errors import DefinitionError
from spark_features.features import DEFAULT_TIMEFRAMES, get_features
from spark_features.features.bars import generate_bars
from spark_features.features.base import EVENT_DATE, FeatureView
from spark_features.ingest import ingest
from spark_features.store import FeatureStoreSaveRepository
from spark_features.store.sources import read_input, write_bars
from spark_features.store.tables import read_table, table_uri

log = logging.getLogger(__name__)


def generate_sample_bars(
    spark: SparkSession, config: Config, symbols: int, start: datetime, end: datetime, seed: int = 7
) -> dict[str, Any]:
    path = config.resolve(config.sources.bars)
    write_bars(generate_bars(spark, symbols, start, end, seed), path)
    return {"bars": path, "symbols": symbols, "start": start.isoformat(), "end": end.isoformat()}


def run_backfill(
    spark: SparkSession,
    config: Config,
    start: datetime,
    end: datetime,
    feature_names: list[str] | None = None,
    timeframes: tuple[str, ...] = DEFAULT_TIMEFRAMES,
    chunk: str = "1d",
    force: bool = False,
) -> dict[str, Any]:
    """Chunked, resumable backfill of ``[start, end)`` from the configured bars source."""
    if chunk not in CHUNK_SIZES:
        raise DefinitionError(f"unknown chunk size {chunk!r}; use one of {sorted(CHUNK_SIZES)}")
    features = get_features(feature_names)
    repo = FeatureStoreSaveRepository.from_config(spark, config)
    chunks = plan_chunks(start, end, CHUNK_SIZES[chunk])
    report = run_chunks(spark, repo, config.resolve(config.sources.bars), features, timeframes, chunks, force)
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "chunks": report.chunks,
        "chunks_skipped": report.skipped,
        "rows_written": report.rows_written,
        "seconds": report.seconds,
        "views": [view_summary(spark, config, f.view) for f in features],
    }


def ingest_file(
    spark: SparkSession,
    config: Config,
    path: str,
    name: str,
    keys: list[str],
    timestamp_column: str,
    created_column: str | None,
    ttl: timedelta | None,
    version: str,
    allow_nan: bool,
) -> dict[str, Any]:
    repo = FeatureStoreSaveRepository.from_config(spark, config)
    df = read_input(spark, config.resolve(path))
    result = ingest(repo, df, name, keys, timestamp_column, created_column, ttl, version, allow_nan)
    return {"view": name, "version": version, "rows": result.rows, "uri": result.uri, "run_id": result.run_id}


def view_summary(spark: SparkSession, config: Config, view: FeatureView) -> dict[str, Any]:
    """Rows, event-date range, version and location of a stored view. For Delta the aggregate is
    answered from the transaction log (row counts and partition values), without reading data files."""
    uri = table_uri(config.offline_root, view.name, view.version)
    stats = (
        read_table(spark, uri)
        .agg(F.count("*").alias("rows"), F.min(EVENT_DATE).alias("first"), F.max(EVENT_DATE).alias("last"))
        .first()
    )
    assert stats is not None
    return {
        "view": view.name,
        "version": view.version,
        "definition_hash": view.definition_hash,
        "rows": stats["rows"],
        "first_date": str(stats["first"]),
        "last_date": str(stats["last"]),
        "location": uri,
    }


def quickstart(spark: SparkSession, config: Config, symbols: int = 20, days: int = 30) -> dict[str, Any]:
    """The main job on the embedded default: sample bars -> every example feature stored -> a small
    point-in-time training set -> materialize to the online store -> online reads of a few entities."""
    from spark_features.feast_provider import feature_store
    from spark_features.fetch.repository import FeatureStoreFetchRepository
    from spark_features.online import get_online, materialize

    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    log.info("generating %d symbols x %d days of 1-minute bars", symbols, days)
    bars = generate_sample_bars(spark, config, symbols, start, end)
    log.info("computing and storing every example feature")
    backfill = run_backfill(spark, config, start, end, chunk="7d")
    log.info("building a point-in-time training set")
    asked = [(f"SYM{i:04d}", tf, end - timedelta(hours=h)) for i in range(3) for tf in ("5m", "1h") for h in (1, 30)]
    entities = spark.createDataFrame(asked, "symbol string, timeframe string, event_timestamp timestamp")
    refs = ["returns:log_return", "returns:volatility_20", "trend:rsi_14", "bar_range:atr_14", "volume:vwap_20"]
    training = FeatureStoreFetchRepository.from_config(spark, config).training_set(entities, refs)
    sample = [
        {k: (str(v) if isinstance(v, datetime) else v) for k, v in row.asDict().items()}
        for row in training.orderBy("symbol", "timeframe", "event_timestamp").limit(4).collect()
    ]
    log.info("materializing (%s, %s] into the online store", start.isoformat(), end.isoformat())
    writes = materialize(spark, config, None, start, end)
    rows = [{"symbol": f"SYM{i:04d}", "timeframe": "1h"} for i in range(3)]
    online = get_online(feature_store(config), rows, refs)
    return {
        "bars": bars,
        "backfill": backfill,
        "training_set_sample": sample,
        "materialized": [{"view": w.feast_view, "entities": w.entities, "written": w.written} for w in writes],
        "online": online,
    }
