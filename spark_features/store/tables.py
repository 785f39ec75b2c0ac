"""Offline tables: layout, version info stored with the data, and range replacement.

Layout: ``<root>/<view>/v<version>/``, partitioned by ``event_date`` (UTC), rows sorted by keys then
time inside each file. Version info (view, version, definition hash, keys, schema, TTL, code
version) is stored with the table: Delta table properties, or a ``_spark_features.json`` sidecar for
Parquet. Every Delta write also records its run (run id, range, rows) in the commit's userMetadata.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from importlib.metadata import version as installed_version
from typing import Any

from delta.exceptions import (
    ConcurrentAppendException,
    ConcurrentDeleteDeleteException,
    ConcurrentDeleteReadException,
    ConcurrentTransactionException,
    ConcurrentWriteException,
    DeltaConcurrentModificationException,
    MetadataChangedException,
    ProtocolChangedException,
)
from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from spark_features.errors import FeatureNotFoundError, VersionConflictError
from spark_features.features.base import CREATED_TS, EVENT_DATE, EVENT_TS, NAME_RULE, VERSION_RULE, FeatureView
from spark_features.store import fs
from spark_features.timeutil import lit_ts

PREFIX = "spark_features."
SIDECAR = "_spark_features.json"
# Delta's commit conflicts. In delta-spark 4 these Python classes no longer share a base class.
COMMIT_CONFLICTS = (
    DeltaConcurrentModificationException,
    ConcurrentWriteException,
    MetadataChangedException,
    ProtocolChangedException,
    ConcurrentAppendException,
    ConcurrentDeleteReadException,
    ConcurrentDeleteDeleteException,
    ConcurrentTransactionException,
)


def code_version() -> str:
    return installed_version("spark-features")


def table_uri(root: str, view: str, version: str) -> str:
    return f"{root.rstrip('/')}/{view}/v{version}"


def version_info(view: FeatureView) -> dict[str, str]:
    return {
        "view": view.name,
        "version": view.version,
        "definition_hash": view.definition_hash,
        "entity_keys": ",".join(view.entity_keys),
        "key_types": view.key_types.json(),
        "features": view.features.json(),
        "ttl_seconds": str(int(view.ttl.total_seconds())) if view.ttl else "",
        "has_created_timestamp": str(view.has_created_timestamp).lower(),
        "allow_nan": str(view.allow_nan).lower(),
        "description": view.description,
        "code_version": code_version(),
    }


def view_from_info(info: dict[str, str]) -> FeatureView:
    return FeatureView(
        name=info["view"],
        version=info["version"],
        entity_keys=tuple(info["entity_keys"].split(",")),
        key_types=StructType.fromJson(json.loads(info["key_types"])),
        features=StructType.fromJson(json.loads(info["features"])),
        ttl=timedelta(seconds=int(info["ttl_seconds"])) if info["ttl_seconds"] else None,
        has_created_timestamp=info["has_created_timestamp"] == "true",
        allow_nan=info["allow_nan"] == "true",
        definition_hash=info["definition_hash"],
        description=info.get("description", ""),
    )


def read_info(spark: SparkSession, uri: str) -> dict[str, str] | None:
    """Version info stored with the table at ``uri``, or None when there is no table."""
    if DeltaTable.isDeltaTable(spark, uri):
        detail = DeltaTable.forPath(spark, uri).detail().select("properties").first()
        props: dict[str, str] = detail["properties"] if detail else {}
        return {k.removeprefix(PREFIX): v for k, v in props.items() if k.startswith(PREFIX)}
    text = fs.read_text(spark, f"{uri}/{SIDECAR}")
    return json.loads(text)["info"] if text else None


def check_version(view: FeatureView, info: dict[str, str] | None, uri: str) -> None:
    if info is not None and info.get("definition_hash") != view.definition_hash:
        raise VersionConflictError(
            f"view {view.name!r} version {view.version}: the table at {uri} was written by definition "
            f"{info.get('definition_hash')} but this definition hashes to {view.definition_hash}; "
            "bump the version to store changed features"
        )


def stored_view_names(spark: SparkSession, root: str) -> list[str]:
    """Names of the views under ``root`` (the ``_ledger`` and other non-view directories skipped)."""
    return [name for name in fs.list_dirs(spark, root) if NAME_RULE.match(name)]


def stored_versions(spark: SparkSession, root: str, view: str) -> list[str]:
    dirs = fs.list_dirs(spark, f"{root.rstrip('/')}/{view}")
    versions = [d[1:] for d in dirs if d.startswith("v") and VERSION_RULE.match(d[1:])]
    return sorted(versions, key=lambda v: tuple(int(p) for p in v.split(".")))


def load_view(spark: SparkSession, root: str, name: str, version: str | None = None) -> FeatureView:
    """The definition stored with a table; the highest stored version when ``version`` is None."""
    versions = stored_versions(spark, root, name)
    chosen = version or (versions[-1] if versions else None)
    info = read_info(spark, table_uri(root, name, chosen)) if chosen else None
    if info is None:
        raise FeatureNotFoundError(f"no stored feature view {name!r} (version {version or 'any'}) under {root}")
    return view_from_info(info)


def _ts(value: datetime) -> str:
    return f"TIMESTAMP '{value.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}'"


def range_predicate(start: datetime, end: datetime) -> str:
    """SQL predicate for ``start <= event_timestamp < end`` that also prunes ``event_date``
    partitions; whole-day ranges use the partition column only (Delta then drops whole files)."""
    first, last = start.astimezone(UTC).date(), (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    dates = f"{EVENT_DATE} >= DATE '{first}' AND {EVENT_DATE} <= DATE '{last}'"
    if _midnight(start) and _midnight(end):
        return dates
    return f"{dates} AND {EVENT_TS} >= {_ts(start)} AND {EVENT_TS} < {_ts(end)}"


def _midnight(value: datetime) -> bool:
    utc = value.astimezone(UTC)
    return (utc.hour, utc.minute, utc.second, utc.microsecond) == (0, 0, 0, 0)


def prepare(view: FeatureView, df: DataFrame) -> DataFrame:
    """Add the partition column and sort rows by keys then time inside each output file.

    No shuffle: the writer sorts each task's rows by ``event_date`` anyway, so extending that sort
    to (keys, time) costs little and gives files whose key ranges let readers skip them."""
    return (
        df.select(*view.stored_schema.fieldNames())
        .withColumn(EVENT_DATE, F.to_date(F.col(EVENT_TS)))
        .sortWithinPartitions(EVENT_DATE, *view.entity_keys, EVENT_TS)
    )


def write_delta(
    spark: SparkSession, view: FeatureView, uri: str, df: DataFrame, predicate: str, run: dict[str, Any]
) -> None:
    """Atomically replace the rows matching ``predicate`` with ``df`` (one Delta commit)."""
    if not DeltaTable.isDeltaTable(spark, uri):
        _create_delta(spark, view, uri)
    (
        prepare(view, df)
        .write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", predicate)
        .option("userMetadata", json.dumps(run, sort_keys=True))
        .save(uri)
    )


def _create_delta(spark: SparkSession, view: FeatureView, uri: str) -> None:
    """Create the empty table with its version info. Writers that start side by side on a new view
    race to create it; a loser finds the winner's table and checks that it holds the same definition."""
    created = [CREATED_TS] if view.has_created_timestamp else []
    builder = (
        DeltaTable.createIfNotExists(spark)
        .location(uri)
        .addColumns(view.stored_schema)
        .addColumn(EVENT_DATE, "DATE")
        .partitionedBy(EVENT_DATE)
        # file statistics only where readers filter (keys and times): min/max of feature values
        # never prune a file, and collecting them slows every write
        .property("delta.dataSkippingStatsColumns", ",".join([*view.entity_keys, EVENT_TS, *created]))
    )
    for key, value in version_info(view).items():
        builder = builder.property(PREFIX + key, value)
    try:
        builder.execute()
    except (*COMMIT_CONFLICTS, AnalysisException):
        if not DeltaTable.isDeltaTable(spark, uri):
            raise
        check_version(view, read_info(spark, uri), uri)


def write_parquet(
    spark: SparkSession,
    view: FeatureView,
    uri: str,
    df: DataFrame,
    start: datetime,
    end: datetime,
    run: dict[str, Any],
) -> None:
    """Replace ``[start, end)`` in a Parquet table by dynamic partition overwrite.

    Rows of the boundary days that lie outside the range are kept (read first and checkpointed so
    the overwrite does not read what it replaces); days inside the range that receive no rows are
    removed. Unlike Delta this is not atomic across partitions: readers may see a mix while it runs.
    """
    days = _days(start, end)
    kept: DataFrame | None = None
    if fs.exists(spark, uri) and not (_midnight(start) and _midnight(end)):
        existing = spark.read.parquet(uri)
        boundary = F.col(EVENT_DATE).isin([d.isoformat() for d in (days[0], days[-1])])
        outside = (F.col(EVENT_TS) < lit_ts(start)) | (F.col(EVENT_TS) >= lit_ts(end))
        kept = existing.filter(boundary & outside).select(*view.stored_schema.fieldNames()).localCheckpoint()
    out = df if kept is None else df.unionByName(kept)
    prepared = prepare(view, out)
    written = {r[EVENT_DATE] for r in prepared.select(EVENT_DATE).distinct().collect()}
    prepared.write.mode("overwrite").partitionBy(EVENT_DATE).parquet(uri)
    for day in days:
        if day not in written:
            fs.delete(spark, f"{uri}/{EVENT_DATE}={day.isoformat()}")
    previous = fs.read_text(spark, f"{uri}/{SIDECAR}")
    runs = json.loads(previous)["runs"] if previous else []
    sidecar = {"info": version_info(view), "runs": [*runs, run][-1000:]}
    fs.write_text(spark, f"{uri}/{SIDECAR}", json.dumps(sidecar, indent=1, sort_keys=True))


def _days(start: datetime, end: datetime) -> list[date]:
    first, last = start.astimezone(UTC).date(), (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def read_table(spark: SparkSession, uri: str, version_as_of: int | None = None) -> DataFrame:
    """A stored table (Delta with optional time travel, or Parquet)."""
    if DeltaTable.isDeltaTable(spark, uri):
        reader = spark.read.format("delta")
        if version_as_of is not None:
            reader = reader.option("versionAsOf", version_as_of)
        return reader.load(uri)
    if not fs.exists(spark, uri):
        raise FeatureNotFoundError(f"no table at {uri}")
    return spark.read.parquet(uri)
