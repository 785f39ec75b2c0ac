"""A real Spark standalone cluster (master + one worker on 127.0.0.1, from the installed Spark):
jobs submitted through ./spark-submit.sh produce exactly what local mode produces, on a local root
and on an s3a:// root."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyspark
import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from spark_features.config import Config, OfflineConfig, S3Config, SourcesConfig, SparkConfig
from spark_features.features import ALL_FEATURES
from spark_features.features.bars import generate_bars
from spark_features.fetch.repository import FeatureStoreFetchRepository
from spark_features.pipelines import run_backfill
from spark_features.store.sources import write_bars
from spark_features.store.tables import read_table, table_uri
from tests.conftest import S3Server, free_port, wait_until

pytestmark = pytest.mark.slow
SPARK_HOME = Path(pyspark.__file__).parent
D0 = datetime(2024, 7, 1, tzinfo=UTC)
ORDER = ["symbol", "timeframe", "event_timestamp"]
FEATURES = ["returns:log_return", "returns:volatility_20", "trend:rsi_14", "volume:vwap_20"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[str]:
    """``spark://127.0.0.1:PORT`` of a fresh master with one 2-core worker; stopped afterwards."""
    work = tmp_path_factory.mktemp("cluster")
    port, ui, worker_ui = free_port(), free_port(), free_port()
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_HOME": str(SPARK_HOME), "PYSPARK_PYTHON": sys.executable}
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    logs = open(work / "cluster.log", "w")  # noqa: SIM115
    master = subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
         "--webui-port", str(ui)],
        env=env, stdout=logs, stderr=logs,
    )  # fmt: skip
    url = f"spark://127.0.0.1:{port}"
    worker = subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores", "2",
         "--memory", "3g", "--webui-port", str(worker_ui), "--work-dir", str(work / "worker")],
        env=env, stdout=logs, stderr=logs,
    )  # fmt: skip
    try:
        wait_until(
            lambda: b'"aliveworkers" : 1' in urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/").read().lower(),
            "Spark standalone master with one worker",
            timeout=90,
        )
        yield url
    finally:
        for proc in (worker, master):
            proc.terminate()
            proc.wait(timeout=30)
        logs.close()


def write_conf(path: Path, root: str, bars: str, endpoint: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "spark:\n  master: 'local[2]'\n  shuffle_partitions: 2\n"
        f"offline:\n  root: {root}\nsources:\n  bars: {bars}\n"
        f"s3:\n  endpoint: {endpoint}\n  create_bucket: true\n"
    )
    return path


def submit(cluster: str, conf: Path, *job: str) -> None:
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run(
        [str(root / "spark-submit.sh"), "--master", cluster, "--conf", str(conf), *job],
        cwd="/", capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    assert f"--master {cluster}" in run.stderr


@pytest.mark.parametrize("where", ["local-root", "s3a-root"])
def test_backfill_and_training_set_on_the_cluster_equal_local_mode(
    spark: SparkSession, cluster: str, s3_server: S3Server, tmp_path: Path, where: str
) -> None:
    bars = str(tmp_path / "bars")
    write_bars(generate_bars(spark, 2, D0, D0 + timedelta(days=2), seed=5), bars)
    start, end = (D0 + timedelta(hours=6)).isoformat(), (D0 + timedelta(days=2)).isoformat()
    root = (
        str(tmp_path / "cluster-offline")
        if where == "local-root"
        else f"s3a://{s3_server.bucket}/cluster-{os.getpid()}"
    )
    conf = write_conf(tmp_path / "conf" / "cluster.yaml", root, bars, s3_server.endpoint)
    submit(cluster, conf, "backfill", "--start", start, "--end", end, "--chunk", "1d")
    local = Config(
        spark=SparkConfig(master="local[2]", shuffle_partitions=2),
        offline=OfflineConfig(root=str(tmp_path / "local-offline")),
        sources=SourcesConfig(bars=bars),
        s3=S3Config(endpoint=s3_server.endpoint),
        project_root=tmp_path,
    )
    run_backfill(spark, local, datetime.fromisoformat(start), datetime.fromisoformat(end), chunk="30d")
    for feature in ALL_FEATURES:
        ours = read_table(spark, table_uri(root, feature.name, feature.view.version)).drop("event_date")
        reference = read_table(spark, table_uri(local.offline_root, feature.name, feature.view.version))
        assert_df_equality(ours.orderBy(*ORDER), reference.drop("event_date").orderBy(*ORDER))

    # training set: the same entity rows (with a label) against the cluster's and the local store
    entities = str(tmp_path / "entities.parquet")
    spark.createDataFrame(
        [
            (symbol, timeframe, D0 + timedelta(hours=hours, minutes=minutes), float(i))
            for i, (symbol, timeframe, hours, minutes) in enumerate(
                (s, tf, h, m)
                for s in ("SYM0000", "SYM0001", "NOPE")
                for tf in ("5m", "1h")
                for h in (5, 12, 30, 47)
                for m in (0, 7, 59)
            )
        ],
        "symbol string, timeframe string, event_timestamp timestamp, label double",
    ).write.parquet(entities)
    output = str(tmp_path / "training-set")
    submit(cluster, conf, "training-set", "--entities", entities, "--features", ",".join(FEATURES), "--output", output)
    fetch = FeatureStoreFetchRepository.from_config(spark, local)
    reference = fetch.training_set(spark.read.parquet(entities), FEATURES)
    ours = spark.read.parquet(output)
    assert reference.filter("log_return IS NOT NULL").count() > 20  # the features were found
    assert_df_equality(ours.orderBy(*ORDER, "label"), reference.orderBy(*ORDER, "label"), ignore_nullable=True)
