"""Jobs through their real entry points: the CLI in-process and ./spark-submit.sh as a user runs it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from spark_features.cli import main
from spark_features.config import PROJECT_ROOT
from spark_features.store.tables import load_view, read_table, table_uri

CSV = """symbol,exchange,ts,spread,volume
AAA,X,2024-02-01 10:00:00,0.5,100
AAA,X,2024-02-01 11:00:00,0.25,
BBB,Y,2024-02-01 10:00:00,1.5,300
"""


def conf_file(tmp_path: Path) -> Path:
    conf = tmp_path / "conf" / "test.yaml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("spark:\n  master: 'local[2]'\n  shuffle_partitions: 2\noffline:\n  root: offline\n")
    return conf


def test_ingest_cli_stores_a_csv_and_rejects_bad_input(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = conf_file(tmp_path)
    (tmp_path / "spreads.csv").write_text(CSV)
    args = ["ingest", "--conf", str(conf), "--view", "spreads", "--keys", "symbol,exchange"]
    args += ["--timestamp-column", "ts", "--ttl", "3600", "--input", str(tmp_path / "spreads.csv")]
    assert main(args) == 0
    root = str(tmp_path / "offline")
    view = load_view(spark, root, "spreads")
    assert view.entity_keys == ("symbol", "exchange")
    assert view.ttl is not None and view.ttl.total_seconds() == 3600
    rows = read_table(spark, table_uri(root, "spreads", "1.0.0")).orderBy("symbol", "event_timestamp").collect()
    assert [(r.symbol, r.spread, r.volume) for r in rows] == [("AAA", 0.5, 100), ("AAA", 0.25, None), ("BBB", 1.5, 300)]

    (tmp_path / "bad.csv").write_text(CSV + ",Z,2024-02-01 12:00:00,1.0,5\n")
    bad = [a if a != str(tmp_path / "spreads.csv") else str(tmp_path / "bad.csv") for a in args]
    capsys.readouterr()
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "ValidationError" in err and "'symbol'" in err and "null join key" in err and "1 row" in err
    retyped = tmp_path / "retyped.csv"
    retyped.write_text(CSV.replace(",100\n", ",lots\n"))
    assert main([a if a != str(tmp_path / "spreads.csv") else str(retyped) for a in args]) == 2
    assert "'volume'" in capsys.readouterr().err


@pytest.mark.slow
def test_spark_submit_runs_a_job_from_another_directory(tmp_path: Path) -> None:
    conf = conf_file(tmp_path)
    env = {**os.environ, "SPARK_FEATURES_CONF": str(conf)}
    dry = subprocess.run(
        [
            str(PROJECT_ROOT / "spark-submit.sh"),
            "--dry-run",
            "generate-bars",
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-02",
        ],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--packages io.delta:delta-spark_" in dry.stderr and "jobs/generate_bars.py" in dry.stderr
    run = subprocess.run(
        [
            str(PROJECT_ROOT / "spark-submit.sh"),
            "generate-bars",
            "--symbols",
            "2",
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-01T06:00:00",
        ],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "data" / "bars" / "_delta_log").is_dir()
