"""The save repository: round trips, idempotent range replacement, version info, refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from spark_features.errors import VersionConflictError
from spark_features.features.base import FeatureView
from spark_features.store import FeatureStoreSaveRepository
from spark_features.store.tables import SIDECAR, load_view, read_info, stored_versions
from tests.conftest import S3Server

DAY = datetime(2024, 5, 1, tzinfo=UTC)
VIEW = FeatureView(
    name="prices",
    version="1.0.0",
    entity_keys=("symbol",),
    key_types=StructType([StructField("symbol", StringType(), False)]),
    features=StructType([StructField("price", DoubleType(), True), StructField("trades", LongType(), True)]),
    ttl=timedelta(hours=1),
)
SCHEMA = VIEW.stored_schema


def frame(spark: SparkSession, days: int, price: float = 1.0, symbols: tuple[str, ...] = ("A", "B")) -> DataFrame:
    """Hourly rows for ``days`` days starting at DAY."""
    rows = [(s, DAY + timedelta(hours=h), price + h, h) for s in symbols for h in range(24 * days)]
    return spark.createDataFrame(rows, SCHEMA)


def stored(repo: FeatureStoreSaveRepository) -> DataFrame:
    return repo.read(VIEW).drop("event_date")


def sort(df: DataFrame) -> DataFrame:
    return df.orderBy("symbol", "event_timestamp")


@pytest.fixture(params=["delta", "parquet"])
def repo(request: pytest.FixtureRequest, spark: SparkSession, tmp_path: Path) -> FeatureStoreSaveRepository:
    return FeatureStoreSaveRepository(spark, str(tmp_path / "offline"), request.param)


def test_round_trip(repo: FeatureStoreSaveRepository, spark: SparkSession) -> None:
    data = frame(spark, 2)
    result = repo.write(VIEW, data)
    assert result.rows == 96
    assert result.uri.endswith("/prices/v1.0.0")
    assert_df_equality(sort(stored(repo)), sort(data), ignore_nullable=True)
    partitions = {p.name for p in Path(result.uri).iterdir() if p.name.startswith("event_date=")}
    assert partitions == {"event_date=2024-05-01", "event_date=2024-05-02"}


def test_rewriting_a_range_replaces_values_and_keeps_counts(
    repo: FeatureStoreSaveRepository, spark: SparkSession
) -> None:
    repo.write(VIEW, frame(spark, 3, price=1.0))
    repo.write(VIEW, frame(spark, 3, price=1.0))
    assert stored(repo).count() == 144
    repo.write(VIEW, frame(spark, 3, price=50.0))
    assert stored(repo).count() == 144
    assert stored(repo).agg(F.min("price")).first()[0] == 50.0  # type: ignore[index]


def test_partial_range_rewrite_leaves_other_rows_untouched(
    repo: FeatureStoreSaveRepository, spark: SparkSession
) -> None:
    repo.write(VIEW, frame(spark, 3, price=1.0))
    start, end = DAY + timedelta(days=1, hours=6), DAY + timedelta(days=1, hours=18)
    window = (F.col("event_timestamp") >= F.lit(start)) & (F.col("event_timestamp") < F.lit(end))
    # only symbol A inside the range: B's rows in the range must disappear, everything outside stays
    update = frame(spark, 3, price=1000.0, symbols=("A",)).filter(window)
    repo.write(VIEW, update, start=start, end=end)
    after = stored(repo)
    assert after.filter(~window).count() == 144 - 24
    assert after.filter(~window).agg(F.max("price")).first()[0] < 1000  # type: ignore[index]
    inside = after.filter(window)
    assert inside.count() == 12
    assert {r.symbol for r in inside.collect()} == {"A"}
    assert inside.agg(F.min("price")).first()[0] >= 1000  # type: ignore[index]


def test_empty_input_deletes_nothing_unless_asked(repo: FeatureStoreSaveRepository, spark: SparkSession) -> None:
    repo.write(VIEW, frame(spark, 2))
    empty = spark.createDataFrame([], SCHEMA)
    result = repo.write(VIEW, empty, start=DAY, end=DAY + timedelta(days=1), allow_empty=True)
    assert result.skipped
    assert stored(repo).count() == 96
    repo.write(VIEW, empty, start=DAY, end=DAY + timedelta(days=1), delete_range=True)
    assert stored(repo).count() == 48
    assert stored(repo).agg(F.min("event_timestamp")).first()[0] >= DAY.replace(tzinfo=None) + timedelta(days=1)  # type: ignore[index]


def test_changed_definition_under_same_version_is_refused(
    repo: FeatureStoreSaveRepository, spark: SparkSession
) -> None:
    repo.write(VIEW, frame(spark, 1))
    changed = FeatureView(**{**VIEW.__dict__, "ttl": timedelta(hours=2), "definition_hash": ""})
    with pytest.raises(VersionConflictError, match="bump the version"):
        repo.write(changed, frame(spark, 1))
    bumped = FeatureView(**{**VIEW.__dict__, "version": "1.1.0", "ttl": timedelta(hours=2), "definition_hash": ""})
    repo.write(bumped, frame(spark, 1))
    assert stored_versions(spark, repo.root, "prices") == ["1.0.0", "1.1.0"]
    assert load_view(spark, repo.root, "prices").ttl == timedelta(hours=2)
    assert load_view(spark, repo.root, "prices", "1.0.0") == VIEW
    assert repo.read(VIEW).count() == 48  # the old version stays readable


def test_version_info_and_runs_are_stored_with_the_data(spark: SparkSession, tmp_path: Path) -> None:
    repo = FeatureStoreSaveRepository(spark, str(tmp_path / "offline"))
    first = repo.write(VIEW, frame(spark, 1, price=1.0), run_id="run-one")
    repo.write(VIEW, frame(spark, 1, price=2.0), run_id="run-two")
    info = read_info(spark, first.uri)
    assert info is not None
    assert (info["version"], info["definition_hash"], info["entity_keys"]) == ("1.0.0", VIEW.definition_hash, "symbol")
    assert info["code_version"]
    history = DeltaTable.forPath(spark, first.uri).history().orderBy("version").collect()
    runs = [json.loads(h.userMetadata)["run_id"] for h in history if h.userMetadata]
    assert runs == ["run-one", "run-two"]
    written = json.loads(history[-1].userMetadata)
    assert (written["start"], written["rows"]) == (DAY.isoformat(), 48)
    # time travel to the first write
    v1 = spark.read.format("delta").option("versionAsOf", history[1].version).load(first.uri)
    assert v1.agg(F.min("price")).first()[0] == 1.0  # type: ignore[index]
    assert repo.read(VIEW).agg(F.min("price")).first()[0] == 2.0  # type: ignore[index]


def test_parquet_sidecar_holds_version_info(spark: SparkSession, tmp_path: Path) -> None:
    repo = FeatureStoreSaveRepository(spark, str(tmp_path / "offline"), "parquet")
    result = repo.write(VIEW, frame(spark, 1), run_id="pq-run")
    sidecar = json.loads((Path(result.uri) / SIDECAR).read_text())
    assert sidecar["info"]["definition_hash"] == VIEW.definition_hash
    assert [r["run_id"] for r in sidecar["runs"]] == ["pq-run"]


def test_relative_absolute_and_file_uri_roots_are_the_same_table(spark: SparkSession, tmp_path: Path) -> None:
    from spark_features.config import Config, OfflineConfig

    for root in ("tables", str(tmp_path / "tables"), f"file://{tmp_path}/tables"):
        config = Config(offline=OfflineConfig(root=root), project_root=tmp_path)
        repo = FeatureStoreSaveRepository.from_config(spark, config)
        assert repo.uri(VIEW) == f"{tmp_path}/tables/prices/v1.0.0"
        repo.write(VIEW, frame(spark, 1))
        assert stored(repo).count() == 48


@pytest.mark.slow
def test_s3a_root_round_trip_and_rewrite(spark: SparkSession, s3_server: S3Server) -> None:
    from spark_features.config import S3Config

    root = f"s3a://{s3_server.bucket}/store-test"
    repo = FeatureStoreSaveRepository(spark, root, "delta", S3Config(endpoint=s3_server.endpoint))
    data = frame(spark, 2)
    repo.write(VIEW, data)
    repo.write(VIEW, frame(spark, 1, price=9.0), start=DAY, end=DAY + timedelta(days=1))
    after = stored(repo)
    assert after.count() == 96
    assert after.filter(F.col("event_timestamp") < F.lit(DAY + timedelta(days=1))).agg(F.min("price")).first()[0] == 9.0  # type: ignore[index]
    assert load_view(spark, root, "prices") == VIEW
    keys = [
        o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix="store-test/")["Contents"]
    ]
    assert any("event_date=2024-05-02" in k for k in keys)
    parquet = FeatureStoreSaveRepository(spark, root + "-pq", "parquet", S3Config(endpoint=s3_server.endpoint))
    parquet.write(VIEW, data)
    assert_df_equality(sort(stored(parquet)), sort(data), ignore_nullable=True)


def test_write_releases_the_cache_it_took_and_keeps_the_callers(
    repo: FeatureStoreSaveRepository, spark: SparkSession
) -> None:
    """A write caches its input for validation plus write; leaving it cached leaked one cached input
    per write, chunk after chunk of a long backfill, until the driver ran out of heap."""
    data = frame(spark, 1)
    repo.write(VIEW, data)
    assert not data.storageLevel.useMemory
    cached = frame(spark, 1, price=5.0).cache()
    repo.write(VIEW, cached)
    assert cached.storageLevel.useMemory
    cached.unpersist()
