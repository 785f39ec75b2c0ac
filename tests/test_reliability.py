"""Reliability (issue #7): kill -9 and resume, concurrent writers, S3 faults through a fault-injecting
proxy, bad input, corrupted files, secrets and listening ports. ``bench/chaos.py`` runs the same
helpers at full size; here they run small."""

from __future__ import annotations

import logging
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, FloatType, LongType, StringType, StructField, StructType

from bench.chaos import (
    D0,
    Digest,
    MultipartOutcome,
    Workload,
    compare_roots,
    digest,
    exposed,
    feast_registry,
    finish,
    kill_cycles,
    last_version,
    listening_addresses,
    make_bars,
    multipart_failure_job,
    new_bucket,
    route_bucket,
    secret_hits,
    slowdown_job,
    write_conf,
)
from spark_features.config import Config, OfflineConfig, S3Config
from spark_features.errors import EnvironmentSetupError, ValidationError, WriteConflictError
from spark_features.features.base import FeatureView
from spark_features.s3 import MULTI_DRIVER_LOG_STORE, unsafe_delta_on_s3
from spark_features.session import build_session
from spark_features.store import FeatureStoreSaveRepository
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY, S3Server
from tests.faultproxy import FaultProxy, Rule
from tests.test_store import DAY, VIEW, frame

CANARIES = (S3_ACCESS_KEY, S3_SECRET_KEY)
READ_ERRORS = (Py4JJavaError, PySparkException)


@dataclass(frozen=True)
class Reference:
    workload: Workload
    root: str
    seconds: float


@pytest.fixture(scope="module")
def reference(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """A clean, uninterrupted run of a 3-chunk backfill of 2 symbols (two views, 1m and 1h bars)."""
    base = tmp_path_factory.mktemp("reliability")
    bars = make_bars(spark, str(base / "bars"), symbols=2, days=3)
    workload = Workload(bars, D0 + timedelta(hours=12), D0 + timedelta(days=3))
    began = time.monotonic()
    workload.run(spark, workload.config(str(base / "reference"), base))
    return Reference(workload, str(base / "reference"), time.monotonic() - began)


@pytest.fixture(scope="module")
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint, seed=11) as running:
        yield running


# ---- 1. crash and resume ------------------------------------------------------------------------


@pytest.mark.slow
def test_backfill_killed_at_random_points_ends_equal_to_a_clean_run(
    spark: SparkSession, reference: Reference, tmp_path: Path
) -> None:
    workload = reference.workload
    conf = write_conf(tmp_path / "conf" / "kill.yaml", str(tmp_path / "killed"), workload.bars)
    work = max(5.0, 2 * reference.seconds)
    report = kill_cycles(workload.command(conf), tmp_path / "logs", cycles=2, rng=random.Random(5), work_seconds=work)
    assert report.kills == 2
    finish(workload.command(conf), tmp_path / "logs" / "final.log")
    outcome = compare_roots(spark, workload, str(tmp_path / "killed"), reference.root)
    assert (outcome.rows_lost, outcome.rows_duplicated, outcome.equal) == (0, 0, True)
    assert outcome.versions_checked >= 2 * 3  # every commit of both views was read back
    # the killed drivers listened on loopback only
    assert report.listening and not exposed(report.listening)


# ---- 2. concurrent writers ----------------------------------------------------------------------


def hourly(spark: SparkSession, price: float, start: datetime, end: datetime) -> DataFrame:
    inside = (F.col("event_timestamp") >= F.lit(start)) & (F.col("event_timestamp") < F.lit(end))
    return frame(spark, 4, price=price).filter(inside).coalesce(1)  # one task: one core stays free


def prices_by_day(repo: FeatureStoreSaveRepository) -> dict[str, float]:
    rows = repo.read(VIEW).groupBy("event_date").agg(F.min("price").alias("p")).collect()
    return {str(r["event_date"]): r["p"] for r in rows}


def written_by(*bases: float) -> dict[str, float]:
    """The smallest price of each day of ``frame`` when day ``i`` was last written with ``bases[i]``."""
    return {f"2024-05-0{i + 1}": base + 24 * i for i, base in enumerate(bases)}


@pytest.mark.slow
@pytest.mark.parametrize("overlap", [False, True], ids=["disjoint", "overlapping"])
def test_concurrent_writers_conflict_only_on_overlap(
    spark: SparkSession, s3_server: S3Server, proxy: FaultProxy, overlap: bool
) -> None:
    bucket = new_bucket(s3_server.endpoint, "concurrent")
    route_bucket(spark, bucket, proxy.endpoint)
    repo = FeatureStoreSaveRepository(spark, f"s3a://{bucket}/t", "delta", S3Config(endpoint=proxy.endpoint))
    repo.write(VIEW, frame(spark, 4, price=1.0))  # 2024-05-01 .. 05-04
    first, last = (DAY, DAY + timedelta(days=2)), (DAY + timedelta(days=1 if overlap else 2), DAY + timedelta(days=3))
    # writer A holds at the upload of its 05-01 file: its transaction has started, nothing committed
    held = proxy.add(Rule(method="PUT", path="event_date=2024-05-01/", gate=threading.Event()))
    outcome: dict[str, object] = {}

    def writer_a() -> None:
        try:
            outcome["a"] = repo.write(VIEW, hourly(spark, 1000.0, *first), *first)
        except WriteConflictError as exc:
            outcome["a"] = exc

    thread = threading.Thread(target=writer_a)
    thread.start()
    try:
        assert held.arrived.wait(180), "writer A never reached its data upload"
        repo.write(VIEW, hourly(spark, 2000.0, *last), *last)  # writer B commits while A is writing
    finally:
        proxy.remove(held)
        thread.join(180)
    if overlap:
        assert isinstance(outcome["a"], WriteConflictError), outcome
        assert "retry" in str(outcome["a"])
        assert prices_by_day(repo) == written_by(1, 2000, 2000, 1)  # A's failed attempt changed nothing
        repo.write(VIEW, hourly(spark, 1000.0, *first), *first)  # the retry succeeds
    else:
        assert not isinstance(outcome["a"], Exception), outcome
    assert prices_by_day(repo) == written_by(1000, 1000, 2000, 1)
    assert digest(repo.read(VIEW), ("symbol",)).duplicates == 0
    assert repo.read(VIEW).count() == 4 * 24 * 2


def test_unsafe_s3_writer_configuration_is_reported(
    caplog: pytest.LogCaptureFixture, spark: SparkSession, test_config: Config
) -> None:
    assert unsafe_delta_on_s3("/data/offline", "delta", {}) is None
    assert unsafe_delta_on_s3("s3a://b/features", "parquet", {}) is None
    assert (
        unsafe_delta_on_s3("s3a://b/features", "delta", {"spark.delta.logStore.s3a.impl": MULTI_DRIVER_LOG_STORE})
        is None
    )
    message = unsafe_delta_on_s3("s3a://b/features", "delta", {})
    assert message and "one writing driver" in message
    config = replace(test_config, offline=OfflineConfig(root="s3a://b/features"))  # same Spark settings
    with caplog.at_level(logging.WARNING, logger="spark_features.session"):
        assert build_session(config) is spark  # the running session; the warning comes first
    assert message in caplog.text


# ---- 3. S3 faults -------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3FaultRun:
    expected: dict[str, Digest]
    slowdown: list[tuple[dict[str, Digest], int]]
    multipart: MultipartOutcome
    config: Config
    workdir: Path


@pytest.fixture(scope="module")
def s3_faults(
    spark: SparkSession,
    s3_server: S3Server,
    proxy: FaultProxy,
    reference: Reference,
    tmp_path_factory: pytest.TempPathFactory,
) -> S3FaultRun:
    """The backfill on S3 with 10% of requests answered ``503 SlowDown`` (a run and a forced re-run),
    then a separate driver whose multipart-upload completions all fail (with a Spark event log)."""
    workdir = tmp_path_factory.mktemp("s3faults")
    bucket = new_bucket(s3_server.endpoint, "faults")
    route_bucket(spark, bucket, proxy.endpoint)
    workload = reference.workload
    config = workload.config(f"s3a://{bucket}/features", workdir, proxy.endpoint)
    slowdown = [slowdown_job(spark, workload, config, proxy, force=False)]  # chaos.py adds a forced re-run
    multipart = multipart_failure_job(spark, workdir, proxy, bucket, rows=300_000)
    expected = {name: digest(df) for name, df in workload.tables(spark, reference.root).items()}
    return S3FaultRun(expected, slowdown, multipart, config, workdir)


@pytest.mark.slow
def test_jobs_succeed_exactly_through_503_slowdown(s3_faults: S3FaultRun) -> None:
    for digests, faults in s3_faults.slowdown:
        assert faults > 0, "no fault was injected: the proxy was bypassed"
        assert digests == s3_faults.expected


@pytest.mark.slow
def test_failed_multipart_completion_fails_the_job_and_keeps_old_data(s3_faults: S3FaultRun) -> None:
    outcome = s3_faults.multipart
    assert outcome.completions_failed > 0, "the data file was not uploaded in parts"
    assert outcome.exit_code != 0, outcome.log[-3000:]
    assert (outcome.digest_unchanged, outcome.files_unchanged, outcome.version_unchanged) == (True, True, True)


# ---- 4. bad input (cases not already in tests/test_validation.py) -------------------------------

TWO_KEYS = FeatureView(
    name="quotes",
    version="1.0.0",
    entity_keys=("symbol", "venue"),
    key_types=StructType([StructField("symbol", StringType(), False), StructField("venue", StringType(), False)]),
    features=StructType([StructField("bid", FloatType(), True), StructField("size", LongType(), True)]),
    has_created_timestamp=True,
)


def quotes(spark: SparkSession) -> DataFrame:
    """Hourly quotes of 8 symbols on 2 venues for one day; ``size`` = hour."""
    rows = [
        (s, v, DAY + timedelta(hours=h), DAY + timedelta(hours=h, minutes=1), float(h), h)
        for s in "ABCDEFGH"
        for v in ("X", "Y")
        for h in range(24)
    ]
    return spark.createDataFrame(rows, TWO_KEYS.stored_schema)


def where_size(n: int, column: str, value: object) -> Callable[[DataFrame], DataFrame]:
    """``column`` set to ``value`` (cast to the column's type) in the rows of hour ``n``."""

    def mutate(df: DataFrame) -> DataFrame:
        typed = F.lit(value).cast(df.schema[column].dataType)
        return df.withColumn(column, F.when(F.col("size") == n, typed).otherwise(F.col(column)))

    return mutate


BAD_QUOTES: list[tuple[str, Callable[[DataFrame], DataFrame], str, str, int]] = [
    ("null second key", where_size(3, "venue", None), "venue", "null join key", 16),
    ("null created", where_size(4, "created_timestamp", None), "created_timestamp", "null timestamp", 16),
    ("NaN in float", where_size(5, "bid", float("nan")), "bid", "NaN or infinite", 16),
    ("+inf in float", where_size(6, "bid", float("inf")), "bid", "NaN or infinite", 16),
    (
        "same created time",
        lambda df: df.unionByName(df.filter(F.col("size") == 7)),
        "symbol,venue,event_timestamp,created_timestamp",
        "duplicate",
        32,
    ),
    (
        "just past the future tolerance",
        lambda df: where_size(8, "event_timestamp", datetime.now(UTC) + timedelta(minutes=10))(df),  # at call time
        "event_timestamp",
        "in the future",
        16,
    ),
    ("key re-typed", lambda df: df.withColumn("venue", F.lit(1)), "venue", "type int != declared string", 0),
    ("feature re-typed", lambda df: df.withColumn("bid", F.col("bid").cast(DoubleType())), "bid", "type double", 0),
    (
        "missing key",
        lambda df: df.drop("venue"),
        "venue",
        "missing column",
        1,
    ),
    (
        "timestamp as string",
        lambda df: df.withColumn("event_timestamp", F.col("event_timestamp").cast("string")),
        "event_timestamp",
        "type string",
        0,
    ),
]


@pytest.fixture(scope="module")
def quotes_repo(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> FeatureStoreSaveRepository:
    repo = FeatureStoreSaveRepository(spark, str(tmp_path_factory.mktemp("quotes")))
    repo.write(TWO_KEYS, quotes(spark))
    return repo


@pytest.mark.parametrize(("case", "mutate", "column", "rule", "count"), BAD_QUOTES, ids=[c[0] for c in BAD_QUOTES])
def test_bad_input_is_rejected_and_the_table_is_unchanged(
    spark: SparkSession,
    quotes_repo: FeatureStoreSaveRepository,
    case: str,
    mutate: Callable[[DataFrame], DataFrame],
    column: str,
    rule: str,
    count: int,
) -> None:
    uri = quotes_repo.uri(TWO_KEYS)
    version, before = last_version(spark, uri), digest(quotes_repo.read(TWO_KEYS), TWO_KEYS.entity_keys)
    with pytest.raises(ValidationError) as raised:
        quotes_repo.write(TWO_KEYS, mutate(quotes(spark)))
    error = raised.value
    assert (error.column, error.count) == (column, count), str(error)
    assert rule in error.rule and column in str(error) and rule in str(error)
    if count and error.samples:  # row rules: five samples out of 16+, each naming every key
        assert len(error.samples) == 5
        assert all(all(f"{k}=" in s for k in ("symbol", "venue", "event_timestamp")) for s in error.samples)
    assert last_version(spark, uri) == version, "nothing may be committed on failure"
    assert digest(quotes_repo.read(TWO_KEYS), TWO_KEYS.entity_keys) == before


# ---- 5. corruption ------------------------------------------------------------------------------


def truncate(path: Path) -> None:
    """Cut ``path`` in half and drop its Hadoop ``.crc`` sidecar (S3 has none), so that only the
    file formats themselves can notice."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    path.with_name(f".{path.name}.crc").unlink(missing_ok=True)


@pytest.mark.parametrize("table_format", ["delta", "parquet"])
def test_a_truncated_data_file_fails_loudly(spark: SparkSession, tmp_path: Path, table_format: str) -> None:
    repo = FeatureStoreSaveRepository(spark, str(tmp_path / "offline"), table_format)
    repo.write(VIEW, frame(spark, 2))
    victim = sorted(Path(repo.uri(VIEW)).glob("event_date=2024-05-02/*.parquet"))[0]
    truncate(victim)
    try:  # a count may come from the table's metadata: then it must be exact
        assert repo.read(VIEW).count() == 96
    except READ_ERRORS as exc:
        assert victim.name in str(exc)
    actions: list[Callable[[DataFrame], object]] = [lambda df: df.collect(), lambda df: df.agg(F.sum("price")).first()]
    for action in actions:
        with pytest.raises(READ_ERRORS) as raised:
            action(repo.read(VIEW))
        assert victim.name in str(raised.value)


def test_a_truncated_checkpoint_fails_loudly_or_reads_exactly(spark: SparkSession, tmp_path: Path) -> None:
    repo = FeatureStoreSaveRepository(spark, str(tmp_path / "offline"))
    repo.write(VIEW, frame(spark, 3))
    uri = repo.uri(VIEW)
    spark.sql(f"ALTER TABLE delta.`{uri}` SET TBLPROPERTIES ('delta.checkpointInterval' = '2')")
    repo.write(VIEW, frame(spark, 1, price=5.0))  # version 3 ... 4: a checkpoint at 4
    repo.write(VIEW, frame(spark, 1, price=6.0))
    log = Path(uri) / "_delta_log"
    checkpoints = sorted(log.glob("*.checkpoint.parquet"))
    assert checkpoints, "no checkpoint was written"
    expected = repo.read(VIEW).count()
    # a) all commits still there: Delta may rebuild the state from them, but never return another count
    copy_a = tmp_path / "a"
    shutil.copytree(uri, copy_a)
    truncate(copy_a / "_delta_log" / checkpoints[-1].name)
    try:
        assert spark.read.format("delta").load(str(copy_a)).count() == expected
    except READ_ERRORS as exc:
        assert "checkpoint" in str(exc).lower() or checkpoints[-1].name in str(exc)
    # b) commits before the checkpoint cleaned up (as log retention does): the checkpoint is the only
    # source of the table's state, so a truncated one must fail the read
    copy_b = tmp_path / "b"
    shutil.copytree(uri, copy_b)
    version = int(checkpoints[-1].name.split(".")[0])
    for commit in (copy_b / "_delta_log").glob("*.json"):
        if int(commit.name.split(".")[0]) < version:
            commit.unlink()
    for crc in (copy_b / "_delta_log").glob("*.crc"):
        crc.unlink()
    assert spark.read.format("delta").load(str(copy_b)).count() == expected  # intact checkpoint: fine
    copy_c = tmp_path / "c"
    shutil.copytree(copy_b, copy_c)
    truncate(copy_c / "_delta_log" / checkpoints[-1].name)
    with pytest.raises(READ_ERRORS):
        spark.read.format("delta").load(str(copy_c)).count()


# ---- 6. secrets and ports -----------------------------------------------------------------------


@pytest.mark.slow
def test_canary_credentials_appear_nowhere(
    spark: SparkSession, s3_server: S3Server, s3_faults: S3FaultRun, tmp_path: Path
) -> None:
    from bench.chaos import download_bucket

    assert os.environ["AWS_SECRET_ACCESS_KEY"] == S3_SECRET_KEY  # the jobs really ran with the canaries
    registry = feast_registry(spark, s3_faults.config)
    bucket = s3_faults.config.offline_root.split("/")[2]
    objects = download_bucket(s3_server.endpoint, bucket, tmp_path / "objects")
    assert any("_delta_log" in str(p) for p in objects) and registry.stat().st_size > 0
    events = list((s3_faults.workdir / "events").iterdir())
    assert events, "the failing job wrote no Spark event log"
    # an error raised by the engine on S3 (a missing bucket) is searched too
    missing = FeatureStoreSaveRepository(
        spark, "s3a://no-such-bucket-xyz/f", "delta", S3Config(endpoint=s3_server.endpoint)
    )
    with pytest.raises(EnvironmentSetupError) as raised:
        missing.write(VIEW, frame(spark, 1))
    texts = [s3_faults.multipart.log, str(raised.value)]
    hits = secret_hits([tmp_path / "objects", registry, s3_faults.workdir], CANARIES, texts)
    assert hits == []
    # the search itself finds a planted canary
    planted = tmp_path / "planted.txt"
    planted.write_text(f"x {S3_SECRET_KEY} y")
    assert len(secret_hits([planted], CANARIES)) == 1


def test_engine_ports_listen_on_loopback_only(spark: SparkSession) -> None:
    assert spark.range(10).repartition(2).count() == 10  # driver, block manager and shuffle are up
    listening = listening_addresses(os.getpid())
    assert listening, "no listening socket found for the Spark JVM"
    assert exposed(listening) == []
    assert exposed(["0.0.0.0:4040", "127.0.0.1:1", "::1:2", "::ffff:127.0.0.1:3", "::5:9"]) == ["0.0.0.0:4040", "::5:9"]
