"""The pandas predecessor's backfill technique, re-implemented small, for side-by-side benchmarks.

What the seed project did (``/work/shared/seed/``, weaknesses listed in DESIGN.md): load the bars
into pandas in the driver, compute every feature there, and save each view as one Parquet file per
day through a repository that re-reads the existing file before every write and keeps the first
row it saw. This module does the same, computing the same 7 features as
``spark_features.features.technical`` on the same timeframes and the same bar-close timestamps, so
the output can be compared with the Spark engine's row for row. Two deliberate differences from the
seed, both in its favour: the merge on re-write uses the full row identity (symbol, timeframe,
time) instead of the timestamp alone, and the rolling statistics are vectorised over the sorted
frame (one ``rolling`` per column, masked at series starts) rather than a Python loop per symbol.

Run as a worker (prints one JSON line):

    .venv/bin/python bench/seed_pandas.py --bars PATH --out DIR --start 2024-01-01 --end 2024-01-08
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

KEYS = ["symbol", "timeframe"]
IDENTITY = [*KEYS, "event_timestamp"]
TIMEFRAMES = {"1m": "1min", "5m": "5min", "1h": "1h"}
VIEWS = {
    "returns": ["log_return", "volatility_20"],
    "trend": ["sma_distance_20", "rsi_14"],
    "bar_range": ["atr_14"],
    "volume": ["volume_zscore_20", "vwap_20"],
}
BAR_COLUMNS = ["symbol", "timeframe", "event_timestamp", "open", "high", "low", "close", "volume"]


def active_files(table: Path) -> list[str]:
    """Relative paths of the data files in a Delta table's current snapshot (JSON log replayed)."""
    files: set[str] = set()
    for commit in sorted((table / "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                files.add(action["add"]["path"])
            elif "remove" in action:
                files.discard(action["remove"]["path"])
    return sorted(files)


def _file_date(path: str) -> str | None:
    for part in path.split("/"):
        if part.startswith("event_date="):
            return part.removeprefix("event_date=")
    return None


def load_bars(table: Path, start: datetime, end: datetime) -> pd.DataFrame:
    """All 1-minute bars in ``[start, end)`` as one pandas frame in the driver (the seed's way)."""
    first, last = start.date().isoformat(), end.date().isoformat()
    wanted = [f for f in active_files(table) if (d := _file_date(f)) is None or first <= d <= last]
    parts = [pq.read_table(table / f, columns=BAR_COLUMNS) for f in wanted]
    frame = pa.concat_tables(parts).to_pandas() if parts else pd.DataFrame(columns=BAR_COLUMNS)
    ts = frame["event_timestamp"]
    keep = (ts >= pd.Timestamp(start)) & (ts < pd.Timestamp(end)) & (frame["timeframe"] == "1m")
    return frame.loc[keep].sort_values(["symbol", "event_timestamp"], ignore_index=True)


def resample(bars: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Bars of ``timeframe`` from sorted 1-minute bars (open = first, close = last in the bucket)."""
    if timeframe == "1m":
        return bars
    bucket = bars["event_timestamp"].dt.floor(TIMEFRAMES[timeframe])
    out = (
        bars.assign(event_timestamp=bucket)
        .groupby(["symbol", "event_timestamp"], sort=True)
        .agg(
            open=("open", "first"),
            high=("high", "max"),
            low=("low", "min"),
            close=("close", "last"),
            volume=("volume", "sum"),
        )
        .reset_index()
    )
    return out.assign(timeframe=timeframe)[BAR_COLUMNS]


def _rolling(values: pd.Series, position: pd.Series, n: int, how: str) -> pd.Series:
    """``how`` over the last ``n`` rows of each series; NaN until ``n`` non-NaN values exist.

    The frame is sorted by (keys, time), so one rolling pass over the whole column is correct
    wherever the row's position in its series is at least ``n - 1``; earlier rows are masked."""
    rolled = getattr(values.rolling(n, min_periods=n), how)()
    return rolled.where(position >= n - 1)


def compute_features(bars: pd.DataFrame) -> pd.DataFrame:
    """Every feature column for every (symbol, timeframe) series, stamped at bar close."""
    frame = pd.concat([resample(bars, tf) for tf in TIMEFRAMES], ignore_index=True)
    frame = frame.sort_values(IDENTITY, ignore_index=True)
    series = frame.groupby(KEYS, sort=False)
    pos = series.cumcount()
    close, high, low, volume = frame["close"], frame["high"], frame["low"], frame["volume"]
    prev_close = series["close"].shift(1)
    log_return = np.log(close / prev_close)
    change = close - prev_close
    gains = _rolling(change.clip(lower=0.0), pos, 14, "mean")
    losses = _rolling((-change).clip(lower=0.0), pos, 14, "mean")
    rsi = pd.Series(np.where(losses == 0, 100.0, 100.0 - 100.0 / (1.0 + gains / losses)), index=frame.index)
    true_range = pd.concat([high - low, (high - prev_close).abs(), (low - prev_close).abs()], axis=1).max(axis=1)
    mean_volume, std_volume = _rolling(volume, pos, 20, "mean"), _rolling(volume, pos, 20, "std")
    zscore = pd.Series(np.where(std_volume > 0, (volume - mean_volume) / std_volume, 0.0), index=frame.index)
    typical = (high + low + close) / 3.0
    seconds = frame["timeframe"].map({tf: pd.Timedelta(f) for tf, f in TIMEFRAMES.items()})
    return pd.DataFrame(
        {
            "symbol": frame["symbol"],
            "timeframe": frame["timeframe"],
            "event_timestamp": frame["event_timestamp"] + seconds,
            "log_return": log_return,
            "volatility_20": _rolling(log_return, pos, 20, "std"),
            "sma_distance_20": close / _rolling(close, pos, 20, "mean") - 1.0,
            "rsi_14": rsi.where(gains.notna() & losses.notna()),
            "atr_14": _rolling(true_range.where(prev_close.notna()), pos, 14, "mean"),
            "volume_zscore_20": zscore.where(std_volume.notna()),
            "vwap_20": _rolling(typical * volume, pos, 20, "sum") / _rolling(volume, pos, 20, "sum"),
        }
    )


def save_day(path: Path, rows: pd.DataFrame) -> None:
    """The seed's write: re-read the day's file, append, keep the first row per identity, rewrite."""
    if path.exists():
        rows = pd.concat([pd.read_parquet(path), rows], ignore_index=True).drop_duplicates(IDENTITY, keep="first")
    rows.to_parquet(path, index=False, coerce_timestamps="us")


def save_views(features: pd.DataFrame, root: Path) -> int:
    written = 0
    day = features["event_timestamp"].dt.strftime("%Y-%m-%d")
    for view, columns in VIEWS.items():
        (root / view).mkdir(parents=True, exist_ok=True)
        frame = features[[*IDENTITY, *columns]]
        for date, rows in frame.groupby(day, sort=True):
            save_day(root / view / f"{date}.parquet", rows)
            written += len(rows)
    return written


def backfill(bars_table: Path, out: Path, start: datetime, end: datetime) -> dict[str, float | int]:
    """Load, compute and save ``[start, end)``, reading one day of history before ``start``."""
    began = time.perf_counter()
    bars = load_bars(bars_table, start - timedelta(days=1), end)
    loaded = time.perf_counter()
    features = compute_features(bars)
    in_range = (features["event_timestamp"] >= pd.Timestamp(start)) & (features["event_timestamp"] < pd.Timestamp(end))
    features = features.loc[in_range]
    computed = time.perf_counter()
    rows = save_views(features, out)
    done = time.perf_counter()
    return {
        "input_rows": int((bars["event_timestamp"] >= pd.Timestamp(start)).sum()),
        "rows_written": rows,
        "seconds": round(done - began, 2),
        "load_seconds": round(loaded - began, 2),
        "compute_seconds": round(computed - loaded, 2),
        "save_seconds": round(done - computed, 2),
    }


def read_views(root: Path, views: Iterable[str] = VIEWS) -> dict[str, pd.DataFrame]:
    """The saved views, one frame each (for equality checks against the engine's tables)."""
    return {v: pd.read_parquet(root / v).sort_values(IDENTITY, ignore_index=True) for v in views}


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", required=True, type=Path, help="the bars Delta table (local path)")
    parser.add_argument("--out", required=True, type=Path, help="output root for the per-day Parquet files")
    parser.add_argument("--start", required=True, type=_utc)
    parser.add_argument("--end", required=True, type=_utc)
    args = parser.parse_args()
    print(json.dumps(backfill(args.bars, args.out, args.start, args.end)), flush=True)


if __name__ == "__main__":
    main()
