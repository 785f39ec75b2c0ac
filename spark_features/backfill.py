"""Compute features from bars over a time range and store them, chunk by chunk.

A chunk ``[start, end)`` reads bars from ``start - lookback`` (aligned down to the coarsest
timeframe) so every rolling window at the chunk's start sees the same history as a one-shot run,
computes, keeps rows stamped in ``[start, end)`` and replaces exactly that range in each view.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_features.errors import DefinitionError
from spark_features.features.bars import TIMEFRAMES, multi_timeframe
from spark_features.features.base import EVENT_TS, BaseFeature
from spark_features.store import FeatureStoreSaveRepository, WriteResult, fs
from spark_features.store.sources import read_bars
from spark_features.timeutil import lit_ts

log = logging.getLogger(__name__)
Chunk = tuple[datetime, datetime]
SERIES_KEYS = ("symbol", "timeframe")


def read_start(features: Sequence[BaseFeature], timeframes: Sequence[str], start: datetime) -> datetime:
    """Where to start reading bars for a chunk starting at ``start``."""
    coarsest = max(TIMEFRAMES[tf] for tf in timeframes)
    lookback = max((f.lookback(coarsest) for f in features), default=timedelta(0))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((start - lookback - epoch) // coarsest) * coarsest


def bar_series(bars: DataFrame, timeframes: Sequence[str]) -> DataFrame:
    """The bars of every timeframe, hash-partitioned by series (symbol, timeframe) and sorted by
    time inside each partition. Every feature's windows are partitioned by the series and ordered
    by time, so once this is cached they run on it without another shuffle or sort."""
    return (
        multi_timeframe(bars, tuple(timeframes)).repartition(*SERIES_KEYS).sortWithinPartitions(*SERIES_KEYS, EVENT_TS)
    )


def features_in_range(
    series: DataFrame, features: Sequence[BaseFeature], start: datetime, end: datetime
) -> dict[str, DataFrame]:
    """Feature DataFrames for ``[start, end)`` from bar series that include the needed lookback."""
    in_range = (F.col(EVENT_TS) >= lit_ts(start)) & (F.col(EVENT_TS) < lit_ts(end))
    return {f.name: f.run({"bars": series}).filter(in_range) for f in features}


@dataclass(frozen=True)
class ChunkResult:
    start: datetime
    end: datetime
    writes: tuple[WriteResult, ...]

    @property
    def rows(self) -> int:
        return sum(w.rows for w in self.writes)


def backfill_chunk(
    spark: SparkSession,
    repo: FeatureStoreSaveRepository,
    bars_path: str,
    features: Sequence[BaseFeature],
    timeframes: Sequence[str],
    start: datetime,
    end: datetime,
    run_id: str | None = None,
) -> ChunkResult:
    """Compute and store one chunk for every feature. The bars are read and resampled once per chunk
    and cached as series (``bar_series``) that all features share."""
    bars = read_bars(spark, bars_path, read_start(features, timeframes, start), end)
    series = bar_series(bars, timeframes).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        frames = features_in_range(series, features, start, end)
        writes = tuple(
            repo.write(f.view, frames[f.name], start, end, allow_empty=True, run_id=run_id) for f in features
        )
    finally:
        series.unpersist()
    return ChunkResult(start, end, writes)


CHUNK_SIZES = {"1d": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}


def plan_chunks(start: datetime, end: datetime, size: timedelta) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut into consecutive chunks of ``size`` (the last one may be shorter)."""
    if start >= end:
        raise DefinitionError(f"backfill range is empty: start {start.isoformat()} >= end {end.isoformat()}")
    chunks, cursor = [], start
    while cursor < end:
        chunks.append((cursor, min(cursor + size, end)))
        cursor += size
    return chunks


def _ledger_dir(root: str, feature: BaseFeature) -> str:
    return f"{root.rstrip('/')}/_ledger/{feature.name}/v{feature.view.version}"


def _entry_name(start: datetime, end: datetime) -> str:
    return f"{start.strftime('%Y%m%dT%H%M%S')}_{end.strftime('%Y%m%dT%H%M%S')}.json"


def finished_chunks(spark: SparkSession, root: str, feature: BaseFeature) -> set[str]:
    """Ledger entries of this feature's current definition (a torn entry counts as not done)."""
    directory = _ledger_dir(root, feature)
    done = set()
    for name in fs.list_files(spark, directory):
        try:
            entry = json.loads(fs.read_text(spark, f"{directory}/{name}") or "")
        except json.JSONDecodeError:
            continue
        if entry.get("definition_hash") == feature.view.definition_hash:
            done.add(name)
    return done


def record_chunk(spark: SparkSession, root: str, feature: BaseFeature, write: WriteResult, chunk: Chunk) -> None:
    entry = {
        "view": feature.name,
        "version": feature.view.version,
        "definition_hash": feature.view.definition_hash,
        "start": chunk[0].isoformat(),
        "end": chunk[1].isoformat(),
        "rows": write.rows,
        "run_id": write.run_id,
        "written_at": datetime.now(UTC).isoformat(),
    }
    fs.write_text(spark, f"{_ledger_dir(root, feature)}/{_entry_name(*chunk)}", json.dumps(entry, sort_keys=True))


@dataclass(frozen=True)
class BackfillReport:
    chunks: int
    skipped: int
    rows_written: int
    seconds: float


def run_chunks(
    spark: SparkSession,
    repo: FeatureStoreSaveRepository,
    bars_path: str,
    features: Sequence[BaseFeature],
    timeframes: Sequence[str],
    chunks: Sequence[Chunk],
    force: bool = False,
) -> BackfillReport:
    """Compute and store every chunk not yet in the ledger (all of them with ``force``).

    A chunk is recorded per view only after that view's write committed, so a crash at any point
    leaves each chunk either recorded or redone in full by the next run (writes replace exactly the
    chunk's range, so redoing never duplicates rows).
    """
    done = {f.name: set() if force else finished_chunks(spark, repo.root, f) for f in features}
    todo = [c for c in chunks if any(_entry_name(*c) not in done[f.name] for f in features)]
    log.info("backfill: %d chunks planned, %d already done, %d to run", len(chunks), len(chunks) - len(todo), len(todo))
    began, rows = time.monotonic(), 0
    for index, chunk in enumerate(todo, start=1):
        pending = [f for f in features if _entry_name(*chunk) not in done[f.name]]
        result = backfill_chunk(spark, repo, bars_path, pending, timeframes, *chunk)
        for feature, write in zip(pending, result.writes, strict=True):
            record_chunk(spark, repo.root, feature, write, chunk)
        rows += result.rows
        elapsed = time.monotonic() - began
        eta = elapsed / index * (len(todo) - index)
        log.info(
            "backfill: chunk %d/%d [%s, %s) rows=%d | total rows=%d elapsed=%.0fs eta=%.0fs",
            index, len(todo), chunk[0].isoformat(), chunk[1].isoformat(), result.rows, rows, elapsed, eta,
        )  # fmt: skip
    return BackfillReport(len(chunks), len(chunks) - len(todo), rows, round(time.monotonic() - began, 1))
