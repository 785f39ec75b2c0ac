"""Chaos run: SIGKILL a backfill at random points and re-run it, S3 faults through a fault-injecting
proxy, and a search for the canary credentials in everything the engine wrote or printed.

The helpers here are also what ``tests/test_reliability.py`` uses at a smaller size. Last line:
``RESULT kill_cycles=<n> rows_lost=<n> rows_duplicated=<n> fault_jobs_ok=<n>/<m> secret_hits=<n>``.

    .venv/bin/python bench/chaos.py [--quick] [--cycles 20] [--seed 1]
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import yaml
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``tests`` importable
    sys.path.insert(0, str(ROOT))

from spark_features.config import Config, OfflineConfig, S3Config, SourcesConfig, SparkConfig  # noqa: E402
from spark_features.features import get_features  # noqa: E402
from spark_features.features.bars import generate_bars  # noqa: E402
from spark_features.features.base import EVENT_DATE, EVENT_TS  # noqa: E402
from spark_features.pipelines import run_backfill  # noqa: E402
from spark_features.store.sources import write_bars  # noqa: E402
from spark_features.store.tables import read_table, table_uri  # noqa: E402
from tests.faultproxy import FaultProxy, Rule  # noqa: E402

D0 = datetime(2024, 6, 1, tzinfo=UTC)
FEATURES = ("returns", "volume")
TIMEFRAMES = ("1m", "1h")
KEYS = ("symbol", "timeframe")
# s3a retries that make a 503 cost ~0.1 s instead of seconds, and give up quickly on hard failures
FAST_RETRIES = {
    "fs.s3a.attempts.maximum": "3",
    "fs.s3a.retry.limit": "3",
    "fs.s3a.retry.interval": "100ms",
    "fs.s3a.retry.throttle.limit": "20",
    "fs.s3a.retry.throttle.interval": "50ms",
}
# force multipart uploads for data files above 5 MB (the smallest part size S3 allows)
MULTIPART = {"fs.s3a.multipart.size": "5M", "fs.s3a.multipart.threshold": "5M"}
LOOPBACK_NETS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


# ---- comparing tables -------------------------------------------------------------------------


@dataclass(frozen=True)
class Digest:
    rows: int
    checksum: int  # sum of a 64-bit hash of every row: order-free, sensitive to any changed value
    duplicates: int  # rows beyond the first per (keys, event_timestamp)


def digest(df: DataFrame, keys: Sequence[str] = KEYS) -> Digest:
    columns = sorted(c for c in df.columns if c != EVENT_DATE)
    row_hash = F.xxhash64(*[F.col(c) for c in columns]).cast("decimal(38,0)")
    stats = df.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(row_hash).alias("checksum"),
        F.count_distinct(*[F.col(k) for k in (*keys, EVENT_TS)]).alias("identities"),
    ).first()
    assert stats is not None
    return Digest(int(stats["rows"]), int(stats["checksum"] or 0), int(stats["rows"] - stats["identities"]))


def rows_missing(expected: DataFrame, actual: DataFrame) -> int:
    """Rows of ``expected`` (as a multiset) that ``actual`` lacks or holds with other values."""
    columns = sorted(c for c in expected.columns if c != EVENT_DATE)

    def hashed(df: DataFrame) -> DataFrame:
        return df.select(F.xxhash64(*[F.col(c) for c in columns]).alias("h"))

    return hashed(expected).exceptAll(hashed(actual)).count()


def check_every_version(spark: SparkSession, uri: str, keys: Sequence[str] = KEYS) -> int:
    """Read every Delta version of ``uri``; raise if one is unreadable or holds duplicate rows."""
    from delta.tables import DeltaTable

    versions = [r["version"] for r in DeltaTable.forPath(spark, uri).history().select("version").collect()]
    for version in sorted(versions):
        table = spark.read.format("delta").option("versionAsOf", version).load(uri)
        dupes = table.groupBy(*keys, EVENT_TS).count().filter(F.col("count") > 1).count()
        if dupes:
            raise AssertionError(f"{uri} version {version} holds {dupes} duplicate (keys, event_timestamp) groups")
    return len(versions)


# ---- S3 through the fault proxy ---------------------------------------------------------------


def route_bucket(spark: SparkSession, bucket: str, endpoint: str) -> None:
    """Send this session's s3a traffic for ``bucket`` to ``endpoint`` (per-bucket s3a options, so
    other buckets keep the session's endpoint); call before the bucket's first use."""
    conf: Any = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
    conf.set(f"fs.s3a.bucket.{bucket}.endpoint", endpoint)
    for key, value in FAST_RETRIES.items():
        conf.set(f"fs.s3a.bucket.{bucket}.{key.removeprefix('fs.s3a.')}", value)


def new_bucket(s3_endpoint: str, prefix: str) -> str:
    import boto3

    bucket = f"{prefix}-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return bucket


def download_bucket(s3_endpoint: str, bucket: str, target: Path) -> list[Path]:
    """Every object of ``bucket`` copied under ``target`` (data, ``_delta_log``, ledger)."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    files = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            path = target / bucket / item["Key"]
            path.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, item["Key"], str(path))
            files.append(path)
    return files


# ---- backfill jobs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """A small multi-chunk backfill: bars of ``symbols`` symbols, ``[start, end)`` in 1-day chunks."""

    bars: str
    start: datetime
    end: datetime
    features: tuple[str, ...] = FEATURES
    timeframes: tuple[str, ...] = TIMEFRAMES

    def config(self, root: str, project: Path, s3_endpoint: str | None = None) -> Config:
        return Config(
            spark=SparkConfig(master="local[2]", shuffle_partitions=2),
            offline=OfflineConfig(root=root),
            sources=SourcesConfig(bars=self.bars),
            s3=S3Config(endpoint=s3_endpoint),
            project_root=project,
        )

    def run(self, spark: SparkSession, config: Config, force: bool = False) -> dict[str, Any]:
        return run_backfill(
            spark, config, self.start, self.end, list(self.features), self.timeframes, "1d", force=force
        )

    def command(self, conf: Path) -> list[str]:
        return [sys.executable, "-m", "spark_features.cli", "backfill", "--conf", str(conf),
                "--start", self.start.isoformat(), "--end", self.end.isoformat(), "--chunk", "1d",
                "--features", ",".join(self.features), "--timeframes", ",".join(self.timeframes)]  # fmt: skip

    def tables(self, spark: SparkSession, root: str) -> dict[str, DataFrame]:
        return {
            f.name: read_table(spark, self.uri(root, f.name)).drop(EVENT_DATE)
            for f in get_features(list(self.features))
        }

    def uri(self, root: str, name: str) -> str:
        view = next(f.view for f in get_features([name]))
        return table_uri(root, view.name, view.version)


def make_bars(spark: SparkSession, path: str, symbols: int, days: int, seed: int = 3) -> str:
    write_bars(generate_bars(spark, symbols, D0, D0 + timedelta(days=days), seed=seed), path)
    return path


def write_conf(
    path: Path, root: str, bars: str, s3_endpoint: str | None = None, extra: dict[str, str] | None = None
) -> Path:
    """A conf file for a job run as a separate driver process (``spark-features ... --conf``)."""
    conf: dict[str, Any] = {
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "log_level": "INFO", "extra": extra or {}},
        "offline": {"root": root},
        "sources": {"bars": bars},
    }
    if s3_endpoint:
        conf["s3"] = {"endpoint": s3_endpoint}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(conf))
    return path


def event_log_conf(directory: Path) -> dict[str, str]:
    """Spark settings that write the job's event log (scanned for secrets) under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    return {"spark.eventLog.enabled": "true", "spark.eventLog.dir": f"file://{directory}"}


def hadoop_conf(settings: dict[str, str]) -> dict[str, str]:
    return {f"spark.hadoop.{key}": value for key, value in settings.items()}


def job_env() -> dict[str, str]:
    return {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}


# ---- kill -9 cycles ---------------------------------------------------------------------------


@dataclass
class KillReport:
    kills: int = 0
    completed_runs: int = 0
    listening: list[str] = field(default_factory=list)  # "ip:port" of every listening socket seen
    logs: list[Path] = field(default_factory=list)


def listening_addresses(pid: int) -> list[str]:
    """``ip:port`` of every TCP socket in LISTEN state held by ``pid`` and its descendants."""
    found = []
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                for conn in proc.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN:
                        found.append(f"{conn.laddr.ip}:{conn.laddr.port}")
    return found


def exposed(addresses: Sequence[str]) -> list[str]:
    """The addresses that are not loopback."""

    def loopback(address: str) -> bool:
        ip = ipaddress.ip_address(address.rsplit(":", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in net for net in LOOPBACK_NETS)

    return [a for a in addresses if not loopback(a)]


def wait_for_text(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"job exited ({proc.returncode}) before {text!r}: {path.read_text()[-3000:]}")
        time.sleep(0.1)
    raise TimeoutError(f"no {text!r} in {path} after {timeout}s")


def kill_cycles(
    command: list[str], logs: Path, cycles: int, rng: random.Random, work_seconds: float, timeout: float = 600
) -> KillReport:
    """Start the backfill, wait until it starts working, SIGKILL its process group after a random
    delay in ``[0, work_seconds)``, and repeat until ``cycles`` runs were killed mid-way. A run that
    finishes first counts as completed; the run after it uses ``--force`` so committed ranges are
    rewritten (and killed) again. The listening sockets of each victim are recorded before the kill."""
    report, force, attempt = KillReport(), False, 0
    logs.mkdir(parents=True, exist_ok=True)
    while report.kills < cycles and attempt < 5 * cycles:
        attempt += 1
        log = logs / f"cycle-{attempt:02d}.log"
        report.logs.append(log)
        with log.open("wb") as out:
            victim = subprocess.Popen(command + (["--force"] if force else []), env=job_env(),
                                      stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            wait_for_text(log, "chunks planned", victim, timeout)
            kill_at = time.monotonic() + rng.uniform(0, work_seconds)
            while time.monotonic() < kill_at and victim.poll() is None:
                time.sleep(0.05)
        except BaseException:
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
            raise
        if victim.poll() is None:
            report.listening += listening_addresses(victim.pid)
            os.killpg(victim.pid, signal.SIGKILL)  # the driver and its JVM, no cleanup at all
            victim.wait()
            report.kills += 1
            force = rng.random() < 0.3  # sometimes kill a rewrite of finished chunks
            continue
        if victim.wait() != 0:
            raise RuntimeError(f"backfill failed ({victim.returncode}): {log.read_text()[-3000:]}")
        report.completed_runs += 1
        force = True
    return report


def working_seconds(command: list[str], log: Path, timeout: float = 900) -> float:
    """Run the backfill to completion as a separate driver, like the victims, and return the time from
    its plan to its exit: the span kill delays are drawn from, so a kill can land anywhere in a run
    (a run in the warm in-process session skips the cold start of the victims' first chunk)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        run = subprocess.Popen(command, env=job_env(), stdout=out, stderr=subprocess.STDOUT)
        wait_for_text(log, "chunks planned", run, timeout)
        began = time.monotonic()
        if run.wait(timeout) != 0:
            raise RuntimeError(f"reference backfill failed ({run.returncode}): {log.read_text()[-3000:]}")
    return time.monotonic() - began


def finish(command: list[str], log: Path, timeout: float = 900) -> None:
    """Run the backfill to completion (the re-run after the last kill)."""
    with log.open("wb") as out:
        done = subprocess.run(
            command, env=job_env(), stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"final backfill failed ({done.returncode}): {log.read_text()[-3000:]}")


@dataclass(frozen=True)
class Outcome:
    rows_lost: int
    rows_duplicated: int
    versions_checked: int
    equal: bool


def compare_roots(spark: SparkSession, workload: Workload, root: str, reference_root: str) -> Outcome:
    """Each view under ``root`` against the clean run under ``reference_root``; every version read."""
    lost = duplicated = versions = 0
    equal = True
    reference = workload.tables(spark, reference_root)
    for name, table in workload.tables(spark, root).items():
        got, want = digest(table), digest(reference[name])
        lost += rows_missing(reference[name], table)
        duplicated += got.duplicates
        equal = equal and got == want
        versions += check_every_version(spark, workload.uri(root, name))
    return Outcome(lost, duplicated, versions, equal)


# ---- S3 fault jobs ----------------------------------------------------------------------------


def slowdown_rule(probability: float = 0.1) -> Rule:
    return Rule(probability=probability)


def complete_multipart_rule() -> Rule:
    """Every CompleteMultipartUpload (``POST ...?uploadId=``) fails with a 500."""
    return Rule(method="POST", query="uploadId=", status=500, code="InternalError", message="injected failure")


def big_input(spark: SparkSession, path: str, rows: int, day: datetime) -> str:
    """A Parquet file of ``rows`` rows of random doubles in one day (over 5 MB, so multipart)."""
    step = int(timedelta(days=1).total_seconds() * 1_000_000 // rows)
    (
        spark.range(rows)
        .select(
            F.lit("SYM").alias("symbol"),
            F.timestamp_micros(F.lit(int(day.timestamp() * 1_000_000)) + F.col("id") * step).alias("ts"),
            *[F.rand(i).alias(f"f{i}") for i in range(4)],
        )
        .coalesce(1)
        .write.mode("overwrite")
        .parquet(path)
    )
    return path


def ingest_command(conf: Path, input_path: str, view: str) -> list[str]:
    return [sys.executable, "-m", "spark_features.cli", "ingest", "--conf", str(conf), "--view", view,
            "--keys", "symbol", "--timestamp-column", "ts", "--input", input_path]  # fmt: skip


# ---- secrets ----------------------------------------------------------------------------------


def secret_hits(paths: Sequence[Path], secrets: Sequence[str], texts: Sequence[str] = ()) -> list[str]:
    """``where: secret`` for every file under ``paths`` and every text that contains a secret."""
    hits = []
    needles = [s.encode() for s in secrets]
    for base in paths:
        files = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()]
        for file in files:
            data = file.read_bytes()
            hits += [f"{file}: {n.decode()[:6]}..." for n in needles if n in data]
    for i, text in enumerate(texts):
        hits += [f"text {i}: {s[:6]}..." for s in secrets if s in text]
    return hits


def feast_registry(spark: SparkSession, config: Config) -> Path:
    """Apply the stored views of ``config`` to a Feast registry; returns the registry file."""
    from spark_features.feast_provider import apply, feature_store, repo_views

    apply(feature_store(config), repo_views(spark, config), config)
    return Path(config.resolve(config.feast.registry))


# ---- the full run -----------------------------------------------------------------------------


@contextlib.contextmanager
def moto_server(workdir: Path) -> Iterator[str]:
    """An S3 server on 127.0.0.1 with the canary credentials in the environment."""
    from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY, free_port, wait_until

    os.environ.update({"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
                       "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"})  # fmt: skip
    port = free_port()
    with (workdir / "moto.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=log)  # fmt: skip
        endpoint = f"http://127.0.0.1:{port}"
        try:
            import urllib.request

            wait_until(lambda: urllib.request.urlopen(endpoint + "/moto-api/").status == 200, "moto S3 server")
            yield endpoint
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def say(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 kill cycles, 2 days, one 503 seed")
    parser.add_argument("--cycles", type=int, help="kill cycles (default 20, quick 3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", help="keep outputs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    cycles = args.cycles or (3 if args.quick else 20)
    days, symbols, seeds = (3, 2, [args.seed]) if args.quick else (5, 3, [args.seed, args.seed + 1])
    rng = random.Random(args.seed)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"workdir {workdir}")
    from spark_features.session import build_session
    from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY

    with moto_server(workdir) as s3_endpoint, FaultProxy(s3_endpoint, seed=args.seed) as proxy:
        spark = build_session(Config(spark=SparkConfig(master="local[2]", shuffle_partitions=2, app_name="chaos")))
        try:
            return run_all(spark, workdir, s3_endpoint, proxy, cycles, days, symbols, seeds, rng,
                           (S3_ACCESS_KEY, S3_SECRET_KEY))  # fmt: skip
        finally:
            spark.stop()


def run_all(
    spark: SparkSession,
    workdir: Path,
    s3_endpoint: str,
    proxy: FaultProxy,
    cycles: int,
    days: int,
    symbols: int,
    seeds: list[int],
    rng: random.Random,
    secrets: tuple[str, str],
) -> int:
    bars = make_bars(spark, str(workdir / "bars"), symbols, days + 1)
    workload = Workload(bars, D0 + timedelta(hours=12), D0 + timedelta(days=days))
    reference_root = str(workdir / "reference")
    reference_conf = write_conf(workdir / "conf" / "reference.yaml", reference_root, bars)
    work_seconds = max(5.0, working_seconds(workload.command(reference_conf), workdir / "logs" / "reference.log"))
    say(f"reference run done ({work_seconds:.0f}s of work in a separate driver); {cycles} kill cycles")

    # 1. kill -9 cycles, then one clean re-run
    killed_root = str(workdir / "killed")
    conf = write_conf(workdir / "conf" / "kill.yaml", killed_root, bars, extra=event_log_conf(workdir / "events"))
    kills = kill_cycles(workload.command(conf), workdir / "logs", cycles, rng, work_seconds)
    finish(workload.command(conf), workdir / "logs" / "final.log")
    outcome = compare_roots(spark, workload, killed_root, reference_root)
    say(f"kills={kills.kills} completed_runs={kills.completed_runs} equal={outcome.equal} "
        f"versions_checked={outcome.versions_checked}")  # fmt: skip

    # 2. S3 faults
    reference = {name: digest(df) for name, df in workload.tables(spark, reference_root).items()}
    jobs: list[tuple[str, bool]] = []
    texts: list[str] = []
    buckets: list[str] = []
    for seed in seeds:
        bucket = new_bucket(s3_endpoint, "chaos")
        buckets.append(bucket)
        route_bucket(spark, bucket, proxy.endpoint)
        config = workload.config(f"s3a://{bucket}/features", workdir / f"s3-{seed}", proxy.endpoint)
        for force in (False, True):
            try:
                got, faults = slowdown_job(spark, workload, config, proxy, force)
                jobs.append((f"503 seed={seed} force={force} faults={faults}", got == reference and faults > 0))
            except Exception as exc:  # a failed job is a result here, reported below
                texts.append(str(exc))
                jobs.append((f"503 seed={seed} force={force}: {type(exc).__name__}", False))
        feast_registry(spark, config)
    mpu = multipart_failure_job(spark, workdir, proxy, buckets[0])
    say(f"multipart job: {replace(mpu, log=f'<{len(mpu.log)} chars>')}")
    jobs.append(("multipart completion fails", mpu.ok))
    texts.append(mpu.log)
    for name, ok in jobs:
        say(f"fault job {name}: {'ok' if ok else 'FAILED'}")

    # 3. secrets and ports
    downloaded = workdir / "s3-objects"
    for bucket in buckets:
        download_bucket(s3_endpoint, bucket, downloaded)
    scanned = [workdir / "logs", workdir / "events", Path(killed_root), downloaded,
               *[workdir / f"s3-{seed}" for seed in seeds], workdir / "mpu"]  # fmt: skip
    hits = secret_hits([p for p in scanned if p.exists()], secrets, texts)
    listening = kills.listening + listening_addresses(os.getpid())
    bad_ports = exposed(listening)
    for hit in hits:
        say(f"secret hit: {hit}")
    say(f"PORTS listening={len(listening)} non_loopback={len(bad_ports)} {' '.join(bad_ports)}")
    ok_jobs = sum(ok for _, ok in jobs)
    print(
        f"RESULT kill_cycles={kills.kills} rows_lost={outcome.rows_lost} rows_duplicated={outcome.rows_duplicated} "
        f"fault_jobs_ok={ok_jobs}/{len(jobs)} secret_hits={len(hits)}",
        flush=True,
    )
    clean = outcome.equal and not outcome.rows_lost and not outcome.rows_duplicated and not hits and not bad_ports
    return 0 if clean and ok_jobs == len(jobs) and kills.kills == cycles else 1


@dataclass(frozen=True)
class MultipartOutcome:
    exit_code: int
    completions_failed: int
    digest_unchanged: bool
    files_unchanged: bool
    version_unchanged: bool
    log: str

    @property
    def ok(self) -> bool:
        unchanged = self.digest_unchanged and self.files_unchanged and self.version_unchanged
        return self.exit_code != 0 and self.completions_failed > 0 and unchanged


def multipart_failure_job(
    spark: SparkSession, workdir: Path, proxy: FaultProxy, bucket: str, rows: int = 400_000
) -> MultipartOutcome:
    """Ingest a small table, then a >5 MB one as a separate driver while every multipart completion
    fails: the job must exit non-zero and the table must read exactly as before."""
    from spark_features.ingest import ingest
    from spark_features.store import FeatureStoreSaveRepository

    root, day = f"s3a://{bucket}/mpu", D0 + timedelta(days=40)
    small = spark.read.parquet(big_input(spark, str(workdir / "mpu" / "small"), 1000, day))
    repo = FeatureStoreSaveRepository(spark, root, "delta", S3Config(endpoint=proxy.endpoint))
    ingest(repo, small, "mpu", ["symbol"], "ts")
    uri = table_uri(root, "mpu", "1.0.0")
    before, files, version = (
        digest(read_table(spark, uri), ("symbol",)),
        read_table(spark, uri).inputFiles(),
        last_version(spark, uri),
    )
    settings = {**hadoop_conf({**FAST_RETRIES, **MULTIPART}), **event_log_conf(workdir / "events")}
    conf = write_conf(workdir / "mpu" / "mpu.yaml", root, str(workdir / "bars"), proxy.endpoint, settings)
    big = big_input(spark, str(workdir / "mpu" / "big"), rows, day)
    log = workdir / "logs" / "multipart.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    rule = proxy.add(complete_multipart_rule())
    try:
        with log.open("wb") as out:
            done = subprocess.run(ingest_command(conf, big, "mpu"), env=job_env(), stdout=out,
                                  stderr=subprocess.STDOUT, timeout=600, check=False)  # fmt: skip
    finally:
        proxy.remove(rule)
    after = read_table(spark, uri)
    return MultipartOutcome(
        exit_code=done.returncode,
        completions_failed=rule.fired,
        digest_unchanged=digest(after, ("symbol",)) == before,
        files_unchanged=sorted(after.inputFiles()) == sorted(files),
        version_unchanged=last_version(spark, uri) == version,
        log=log.read_text(errors="replace"),
    )


def slowdown_job(
    spark: SparkSession, workload: Workload, config: Config, proxy: FaultProxy, force: bool, probability: float = 0.1
) -> tuple[dict[str, Digest], int]:
    """Run the backfill on ``config``'s S3 root while ``probability`` of all requests get ``503
    SlowDown``; returns the digests of the stored views (read through the faults too) and the
    number of faults injected."""
    rule = proxy.add(slowdown_rule(probability))
    try:
        workload.run(spark, config, force=force)
        digests = {name: digest(df) for name, df in workload.tables(spark, config.offline_root).items()}
    finally:
        proxy.remove(rule)
    return digests, rule.fired


def last_version(spark: SparkSession, uri: str) -> int:
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, uri).history(1).select("version").first()
    assert row is not None
    return int(row["version"])


if __name__ == "__main__":
    raise SystemExit(main())
