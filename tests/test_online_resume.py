"""Issue #7 item 7, on SQLite and Redis with real Spark: a materialize whose executor dies mid-partition,
re-run, leaves the online store equal to the offline latest; an older write never wins afterwards.
Every read goes through Feast's SDK (``get_online_features``)."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession

from spark_features.config import Config
from spark_features.feast_provider import apply, feature_store
from spark_features.fetch.latest import latest_per_entity
from spark_features.online import COUNTS_DDL, materialize, push, write_spec
from spark_features.online_writer import WriteSpec, write_batches
from spark_features.store import FeatureStoreSaveRepository
from spark_features.store.tables import read_table, table_uri
from tests.feast_data import (
    ENTITIES,
    FEATURES,
    T0,
    VIEW,
    frame,
    latest,
    online_by_entity,
    online_store_config,
    sample_rows,
)

OLDER = (T0, T0 + timedelta(minutes=60))
RECENT = (T0 + timedelta(minutes=60), T0 + timedelta(minutes=150))
BATCH_ROWS = 2
CRASH_EXIT_CODE = 17


@pytest.fixture(params=["sqlite", "redis"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    return online_store_config(request, tmp_path)


def read_online(config: Config) -> dict[tuple[str, str], dict[str, Any]]:
    rows = [{"symbol": s, "timeframe": tf} for s, tf in ENTITIES]
    store = feature_store(config)
    columns = store.get_online_features(features=[f"{VIEW.feast_name}:{f}" for f in FEATURES], entity_rows=rows)
    return online_by_entity(columns.to_dict())


def die_after_first_batch(batches: Iterator[pa.RecordBatch], spec: WriteSpec) -> Iterator[pa.RecordBatch]:
    """The production writer, whose Python worker process dies once it has written one batch."""

    def first_then_die() -> Iterator[pa.RecordBatch]:
        yield next(batches)
        os._exit(CRASH_EXIT_CODE)  # no cleanup, no exception: as if the executor were killed

    return write_batches(first_then_die(), spec)


def latest_frame(spark: SparkSession, config: Config, start: Any, end: Any) -> DataFrame:
    """What ``materialize`` hands its writers: the latest stored row per entity in (start, end]."""
    stored = read_table(spark, table_uri(config.offline_root, VIEW.name, VIEW.version))
    return latest_per_entity(stored.select(*VIEW.stored_schema.fieldNames()), VIEW.entity_keys, start, end)


def interrupted_materialize(spark: SparkSession, config: Config, start: Any, end: Any) -> None:
    store = feature_store(config)
    apply(store, [VIEW], config)
    spec = dataclasses.replace(write_spec(store, VIEW), transaction_rows=BATCH_ROWS)  # SQLite: 1 batch
    body = functools.partial(die_after_first_batch, spec=spec)
    previous = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(BATCH_ROWS))
    try:
        # one partition of 10 entities: 5 batches, of which the first is written before the worker dies
        with pytest.raises((Py4JJavaError, PySparkException), match=r"crashed|exited|EOF|Python worker"):
            latest_frame(spark, config, start, end).repartition(1).mapInArrow(body, COUNTS_DDL).collect()
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(previous))


@pytest.mark.slow
def test_interrupted_materialize_rerun_equals_offline_latest_and_older_never_wins(
    spark: SparkSession, config: Config
) -> None:
    rows = sample_rows()
    FeatureStoreSaveRepository.from_config(spark, config).write(VIEW, frame(spark, rows))
    older, recent = latest(rows, *OLDER), latest(rows, *RECENT)
    assert len(older) == len(recent) == 10 and all(older[k] != recent[k] for k in recent)
    materialize(spark, config, [VIEW], *OLDER)
    assert read_online(config) == older

    interrupted_materialize(spark, config, *RECENT)
    halfway = read_online(config)
    updated = [k for k in recent if halfway[k] == recent[k]]
    assert len(updated) == BATCH_ROWS  # the first batch landed, whole; the rest still holds older values
    assert all(halfway[k] == older[k] for k in recent if k not in updated)

    rerun = materialize(spark, config, [VIEW], *RECENT)
    assert (rerun[0].entities, rerun[0].written) == (10, 10)  # equal times rewrite: recomputed values land
    assert read_online(config) == recent
    assert feature_store(config).get_feature_view(VIEW.feast_name).materialization_intervals[-1] == RECENT

    again = materialize(spark, config, [VIEW], *OLDER)
    assert (again[0].entities, again[0].written) == (10, 0)
    symbol, timeframe = next(iter(recent))
    stale = [(symbol, timeframe, RECENT[0], 0.5, -1, "stale", False)]
    assert push(spark, config, VIEW, frame(spark, stale)).written == 0
    feast_row = {"symbol": [symbol], "timeframe": [timeframe], "event_timestamp": [pd.Timestamp(RECENT[0])]}
    feature_store(config).write_to_online_store(VIEW.feast_name, pd.DataFrame({**feast_row, **_values(stale[0])}))
    assert read_online(config) == recent


def _values(row: tuple[Any, ...]) -> dict[str, list[Any]]:
    return {name: [value] for name, value in zip(FEATURES, row[3:], strict=True)}
