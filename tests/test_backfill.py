"""Backfills: chunked equals one-shot row for row, the ledger skips finished chunks, and a run
killed with SIGKILL mid-way is completed exactly by the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_features.backfill import plan_chunks
from spark_features.config import Config, OfflineConfig, SourcesConfig, SparkConfig, load_config
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


@pytest.mark.slow
def test_backfill_killed_with_sigkill_is_completed_exactly(spark: SparkSession, tmp_path: Path, bars_path: str) -> None:
    conf = tmp_path / "conf" / "kill.yaml"
    conf.parent.mkdir()
    conf.write_text(
        "spark:\n  master: 'local[2]'\n  shuffle_partitions: 2\n"
        f"offline:\n  root: offline\nsources:\n  bars: {bars_path}\n"
    )
    start, end = D0 + timedelta(hours=12), D0 + 3 * DAY
    command = [sys.executable, "-m", "spark_features.cli", "backfill", "--conf", str(conf),
               "--start", start.isoformat(), "--end", end.isoformat(), "--chunk", "1d"]  # fmt: skip
    ledger = tmp_path / "offline" / "_ledger"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    victim = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and victim.poll() is None:
        if len(list(ledger.glob("*/*/*.json"))) >= 2:  # mid-way: some views of some chunk recorded
            break
        time.sleep(0.2)
    assert victim.poll() is None, "the backfill finished before it could be killed"
    os.killpg(victim.pid, signal.SIGKILL)  # the driver and its JVM, no cleanup
    victim.wait()
    recorded = len(list(ledger.glob("*/*/*.json")))
    assert 0 < recorded < 3 * len(ALL_FEATURES)
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    reference = config(tmp_path / "reference", bars_path)
    run_backfill(spark, reference, start, end, chunk="30d")
    resumed_root = Path(load_config(conf).offline_root)
    for feature in ALL_FEATURES:
        a, b = stored(spark, resumed_root, feature.name), stored(spark, tmp_path / "reference", feature.name)
        order = ["symbol", "timeframe", "event_timestamp"]
        assert a.count() == b.count()  # type: ignore[attr-defined]
        assert a.groupBy(*order).count().filter(F.col("count") > 1).count() == 0  # type: ignore[attr-defined]
        assert_df_equality(a.orderBy(*order), b.orderBy(*order))  # type: ignore[attr-defined]


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
