"""Backfills: chunked equals one-shot row for row, the ledger skips finished chunks, and backfills
side by side never lose data. Runs killed with SIGKILL: tests/test_reliability.py."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_features.backfill import plan_chunks
from spark_features.config import Config, OfflineConfig, SourcesConfig, SparkConfig
from spark_features.errors import WriteConflictError
from spark_features.features import ALL_FEATURES
from spark_features.features.bars import generate_bars
from spark_features.pipelines import run_backfill
from spark_features.store.sources import write_bars
from spark_features.store.tables import read_table, table_uri

D0 = datetime(2024, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def test_plan_chunks_covers_the_range_exactly() -> None:
    chunks = plan_chunks(D0, D0 + timedelta(days=2, hours=5), DAY)
    assert chunks == [(D0, D0 + DAY), (D0 + DAY, D0 + 2 * DAY), (D0 + 2 * DAY, D0 + timedelta(days=2, hours=5))]


@pytest.fixture(scope="module")
def bars_path(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("bars") / "bars")
    write_bars(generate_bars(spark, 3, D0, D0 + 3 * DAY, seed=3), path)
    return path


def config(root: Path, bars: str) -> Config:
    return Config(
        spark=SparkConfig(master="local[2]", shuffle_partitions=2),
        offline=OfflineConfig(root=str(root)),
        sources=SourcesConfig(bars=bars),
        project_root=root,
    )


def stored(spark: SparkSession, root: Path, name: str) -> object:
    view = next(f.view for f in ALL_FEATURES if f.name == name)
    return read_table(spark, table_uri(str(root), view.name, view.version)).drop("event_date")


def test_chunked_backfill_equals_one_shot_and_resumes(spark: SparkSession, tmp_path: Path, bars_path: str) -> None:
    chunked, one_shot = config(tmp_path / "chunked", bars_path), config(tmp_path / "one", bars_path)
    start, end = D0 + DAY, D0 + 3 * DAY
    first = run_backfill(spark, chunked, start, end, chunk="1d")
    assert (first["chunks"], first["chunks_skipped"]) == (2, 0)
    last_day = (end - timedelta(microseconds=1)).date()
    for summary in first["views"]:  # answered from the Delta log: must equal the data
        assert summary["rows"] == stored(spark, tmp_path / "chunked", summary["view"]).count()  # type: ignore[attr-defined]
        assert (summary["first_date"], summary["last_date"]) == (str(start.date()), str(last_day))
    run_backfill(spark, one_shot, start, end, chunk="30d")
    for feature in ALL_FEATURES:
        a = stored(spark, tmp_path / "chunked", feature.name)
        b = stored(spark, tmp_path / "one", feature.name)
        order = ["symbol", "timeframe", "event_timestamp"]
        assert_df_equality(a.orderBy(*order), b.orderBy(*order))  # type: ignore[attr-defined]
        # the first rows of the range already have full windows: lookback was read
        at_start = a.filter(F.col("event_timestamp") == F.lit(start + timedelta(hours=1)))  # type: ignore[attr-defined]
        assert at_start.filter(F.col("timeframe") == "1h").count() == 3
        assert all(v is not None for row in at_start.collect() for v in row)
    again = run_backfill(spark, chunked, start, end, chunk="1d")
    assert (again["chunks_skipped"], again["rows_written"]) == (2, 0)
    forced = run_backfill(spark, chunked, start, end, chunk="1d", force=True)
    assert (forced["chunks_skipped"], forced["rows_written"]) == (0, first["rows_written"])
    assert forced["views"] == first["views"]


def run_side_by_side(spark: SparkSession, cfg: Config, ranges: list[tuple[datetime, datetime]]) -> list[object]:
    """Run one backfill per range in its own thread on the shared session; each outcome is its
    report or the exception it raised."""
    outcomes: list[object] = [None] * len(ranges)

    def run(i: int, start: datetime, end: datetime) -> None:
        try:
            outcomes[i] = run_backfill(spark, cfg, start, end, ["returns"], chunk="1d", force=True)
        except Exception as exc:  # the test inspects what each run raised
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i, *r)) for i, r in enumerate(ranges)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return outcomes


def returns_rows(spark: SparkSession, root: Path) -> DataFrame:
    return stored(spark, root, "returns").orderBy("symbol", "timeframe", "event_timestamp")  # type: ignore[attr-defined,no-any-return]


@pytest.mark.slow
def test_side_by_side_backfills_never_lose_data(spark: SparkSession, tmp_path: Path, bars_path: str) -> None:
    start, middle, end = D0 + DAY, D0 + 2 * DAY, D0 + 3 * DAY
    run_backfill(spark, config(tmp_path / "reference", bars_path), start, end, ["returns"], chunk="30d")
    reference = returns_rows(spark, tmp_path / "reference")
    cfg = config(tmp_path / "shared", bars_path)
    # disjoint ranges of one new view, at the same time: both succeed
    disjoint = run_side_by_side(spark, cfg, [(start, middle), (middle, end)])
    assert all(isinstance(o, dict) for o in disjoint), [f"{type(o).__name__}: {o}" for o in disjoint]
    assert_df_equality(returns_rows(spark, tmp_path / "shared"), reference)
    # the same range twice at the same time: each run succeeds or fails with the typed conflict,
    # a plain re-run then completes, and nothing is lost or duplicated
    overlapping = run_side_by_side(spark, cfg, [(start, end), (start, end)])
    assert all(isinstance(o, dict | WriteConflictError) for o in overlapping), [str(o) for o in overlapping]
    run_backfill(spark, cfg, start, end, ["returns"], chunk="1d")
    assert_df_equality(returns_rows(spark, tmp_path / "shared"), reference)
