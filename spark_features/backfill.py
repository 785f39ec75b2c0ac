"""Compute features from bars over a time range and store them, chunk by chunk.

A chunk ``[start, end)`` reads bars from ``start - lookback`` (aligned down to the coarsest
timeframe) so every rolling window at the chunk's start sees the same history as a one-shot run,
computes, keeps rows stamped in ``[start, end)`` and replaces exactly that range in each view.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_features.features.bars import TIMEFRAMES, multi_timeframe
from spark_features.features.base import EVENT_TS, BaseFeature
from spark_features.store import FeatureStoreSaveRepository, WriteResult
from spark_features.store.sources import read_bars
from spark_features.timeutil import lit_ts

log = logging.getLogger(__name__)


def read_start(features: Sequence[BaseFeature], timeframes: Sequence[str], start: datetime) -> datetime:
    """Where to start reading bars for a chunk starting at ``start``."""
    coarsest = max(TIMEFRAMES[tf] for tf in timeframes)
    lookback = max((f.lookback(coarsest) for f in features), default=timedelta(0))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((start - lookback - epoch) // coarsest) * coarsest


def compute_range(
    bars: DataFrame, features: Sequence[BaseFeature], timeframes: Sequence[str], start: datetime, end: datetime
) -> dict[str, DataFrame]:
    """Feature DataFrames for ``[start, end)`` from ``bars`` that include the needed lookback."""
    sources = {"bars": multi_timeframe(bars, tuple(timeframes))}
    in_range = (F.col(EVENT_TS) >= lit_ts(start)) & (F.col(EVENT_TS) < lit_ts(end))
    return {f.name: f.run(sources).filter(in_range) for f in features}


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
    """Compute and store one chunk for every feature; bars are read once and cached for the chunk."""
    bars = read_bars(spark, bars_path, read_start(features, timeframes, start), end)
    bars = bars.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        frames = compute_range(bars, features, timeframes, start, end)
        writes = tuple(
            repo.write(f.view, frames[f.name], start, end, allow_empty=True, run_id=run_id) for f in features
        )
    finally:
        bars.unpersist()
    return ChunkResult(start, end, writes)
