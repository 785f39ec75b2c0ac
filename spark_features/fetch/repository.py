"""FeatureStoreFetchRepository: point-in-time training sets and latest values from the offline store.

It resolves ``view:feature`` references against the definitions stored with the tables, checks the
entity frame, reads each table with the entity time range pushed down as ``event_date`` /
``event_timestamp`` filters and hands everything to the pure as-of join in ``fetch.asof``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import TimestampNTZType, TimestampType

from spark_features.config import Config
from spark_features.errors import DefinitionError, FeatureNotFoundError, ValidationError
from spark_features.features.base import CREATED_TS, EVENT_DATE, EVENT_TS, FeatureView, parse_feast_name
from spark_features.fetch.asof import ENTITY_FRAME, PREFIX, Lookup, TimeBuckets, asof_join, join_types
from spark_features.fetch.latest import latest_per_entity
from spark_features.store import tables
from spark_features.store.sources import read_input
from spark_features.timeutil import as_utc, from_micros, lit_ts, micros

SAMPLES = 5
MAX_BUCKETS = 256
# enough buckets that the hottest key's share of the entity rows fits in 1/BUCKETS_PER_CORE of a core
BUCKETS_PER_CORE = 4

FeatureServiceResolver = Callable[[str], Sequence[str]]


class FeatureStoreFetchRepository:
    """Reads the tables under one offline root (local path or s3a URI).

    ``time_buckets`` fixes the number of event-time buckets of the as-of join (1 = none); by default
    it is derived from the hottest entity key's share of the entity rows. ``feature_services`` maps a
    feature-service name to its ``view:feature`` references (the Feast integration provides one).
    """

    def __init__(
        self,
        spark: SparkSession,
        offline_root: str,
        time_buckets: int | None = None,
        feature_services: FeatureServiceResolver | None = None,
    ) -> None:
        self.spark = spark
        self.root = offline_root
        self.time_buckets = time_buckets
        self.feature_services = feature_services

    @classmethod
    def from_config(cls, spark: SparkSession, config: Config) -> FeatureStoreFetchRepository:
        return cls(spark, config.offline_root)

    def view(self, ref: str | FeatureView) -> FeatureView:
        """A stored view by name (highest stored version), by Feast name ``<view>_v1_0_0``, or as given."""
        if isinstance(ref, FeatureView):
            return ref
        try:
            name, version = parse_feast_name(ref)
        except DefinitionError:
            return tables.load_view(self.spark, self.root, ref)
        if version in tables.stored_versions(self.spark, self.root, name):
            return tables.load_view(self.spark, self.root, name, version)
        return tables.load_view(self.spark, self.root, ref)

    def read(self, view: FeatureView, lo: datetime | None = None, hi: datetime | None = None) -> DataFrame:
        """The view's stored columns with ``lo <= event_timestamp <= hi``, pruned by ``event_date``."""
        df = tables.read_table(self.spark, tables.table_uri(self.root, view.name, view.version))
        if lo is not None:
            df = df.filter((F.col(EVENT_DATE) >= F.lit(as_utc(lo).date())) & (F.col(EVENT_TS) >= lit_ts(lo)))
        if hi is not None:
            df = df.filter((F.col(EVENT_DATE) <= F.lit(as_utc(hi).date())) & (F.col(EVENT_TS) <= lit_ts(hi)))
        return df.select(*[F.col(c) for c in view.stored_schema.fieldNames()])

    def resolve(
        self, features: Sequence[str] | str, full_feature_names: bool = False
    ) -> list[tuple[FeatureView, str, str]]:
        """``(view, feature, output name)`` per reference, in order; duplicates dropped."""
        if isinstance(features, str):
            if self.feature_services is None:
                raise FeatureNotFoundError(
                    f"feature service {features!r}: this repository has no feature-service resolver; "
                    "pass a list of 'view:feature' references"
                )
            features = list(self.feature_services(features))
        views: dict[str, FeatureView] = {}
        out: list[tuple[FeatureView, str, str]] = []
        for ref in dict.fromkeys(features):
            view_ref, sep, feature = ref.partition(":")
            if not sep or not view_ref or not feature:
                raise FeatureNotFoundError(f"feature reference {ref!r} is not 'view:feature'")
            if view_ref not in views:
                views[view_ref] = self.view(view_ref)
            view = views[view_ref]
            if feature not in view.features.fieldNames():
                raise FeatureNotFoundError(
                    f"view {view.name!r} v{view.version} has no feature {feature!r}; "
                    f"it has {view.features.fieldNames()}"
                )
            out.append((view, feature, f"{view.feast_name}__{feature}" if full_feature_names else feature))
        return out

    def training_set(
        self,
        entity_df: DataFrame,
        features: Sequence[str] | str,
        full_feature_names: bool = False,
        known_at: bool = False,
    ) -> DataFrame:
        """A lazy DataFrame: every entity row (keys, ``event_timestamp``, any other columns) unchanged,
        one output row per input row, followed by the requested features as of its timestamp.

        Runs one small aggregate over ``entity_df`` (time range, null check, hottest key share);
        everything else is lazy. Raises ``ValidationError`` / ``FeatureNotFoundError`` on bad input."""
        resolved = self.resolve(features, full_feature_names)
        _check_entity_columns(entity_df, [name for _, _, name in resolved])
        views = list(dict.fromkeys(view for view, _, _ in resolved))
        coarsest = min((view.entity_keys for view in views), key=len)
        join_types(entity_df, views)  # names a missing or incomparable key column before any job runs
        stats = _entity_stats(entity_df, coarsest)
        first, last = from_micros(stats["lo"]), from_micros(stats["hi"])
        lookups = []
        for view in views:
            taken = [(feature, name) for v, feature, name in resolved if v == view]
            table = self._candidates(view, first, last, known_at)
            lookups.append(Lookup(view, table, tuple(f for f, _ in taken), tuple(n for _, n in taken)))
        buckets = self._buckets(stats, first, last)
        joined = asof_join(entity_df, lookups, known_at=known_at, buckets=buckets)
        return joined.select(*[F.col(c) for c in entity_df.columns], *[F.col(name) for _, _, name in resolved])

    def latest(
        self, views: Sequence[str | FeatureView], as_of: datetime, start: datetime | None = None
    ) -> dict[str, DataFrame]:
        """Per view (by name), the latest stored row per entity with ``start < event_timestamp <= as_of``."""
        out: dict[str, DataFrame] = {}
        for ref in views:
            view = self.view(ref)
            rows = self.read(view, start, as_of)
            out[view.name] = latest_per_entity(rows, view.entity_keys, start, as_of, view.has_created_timestamp)
        return out

    def _candidates(
        self, view: FeatureView, first: datetime | None, last: datetime | None, known_at: bool
    ) -> DataFrame:
        """Rows that can win for some entity row: no later than the last entity time, no older than
        the first minus the TTL; in known-at mode not created after the last entity time."""
        if first is None or last is None:  # no entity rows
            return self.read(view).filter(F.lit(False))
        rows = self.read(view, first - view.ttl if view.ttl else None, last)
        if known_at and view.has_created_timestamp:
            rows = rows.filter(F.col(CREATED_TS) <= lit_ts(last))
        return rows

    def _buckets(self, stats: dict[str, Any], first: datetime | None, last: datetime | None) -> TimeBuckets:
        """Equal buckets over the entity time range. By default only when the hottest key holds more
        than ``1 / (2 * cores)`` of the entity rows, so that one key cannot keep one core busy while
        the others idle; then about ``BUCKETS_PER_CORE * cores`` buckets per share of that key."""
        count = self.time_buckets
        if count is None:
            share = stats["hottest"] / stats["rows"] if stats["rows"] else 0.0
            count = math.ceil(share * BUCKETS_PER_CORE * self.spark.sparkContext.defaultParallelism)
            count = count if count > 2 else 1  # a carry pass for 2 buckets gains nothing
        count = max(1, min(MAX_BUCKETS, count))
        if first is None or last is None or count == 1:
            return TimeBuckets()
        span = stats["hi"] - stats["lo"] + 1
        return TimeBuckets(origin_us=stats["lo"], width_us=max(1, -(-span // count)), count=count)


def _check_entity_columns(entity: DataFrame, names: list[str]) -> None:
    types = {f.name: f.dataType for f in entity.schema.fields}
    if EVENT_TS not in types:
        raise ValidationError(ENTITY_FRAME, EVENT_TS, "missing timestamp column", 0, [])
    if isinstance(types[EVENT_TS], TimestampNTZType):
        rule = "timezone-naive timestamp (TIMESTAMP_NTZ); convert to UTC"
        raise ValidationError(ENTITY_FRAME, EVENT_TS, rule, 0, [])
    if not isinstance(types[EVENT_TS], TimestampType):
        raise ValidationError(
            ENTITY_FRAME, EVENT_TS, f"type {types[EVENT_TS].simpleString()} is not a timestamp", 0, []
        )
    reserved = [c for c in types if c.startswith(PREFIX)]
    if reserved:
        raise ValidationError(ENTITY_FRAME, reserved[0], f"column names starting with {PREFIX!r} are reserved", 0, [])
    clashes = [n for n in names if n in types] + [n for i, n in enumerate(names) if n in names[:i]]
    if clashes:
        rule = "output feature name also names an entity column or another feature; use full_feature_names"
        raise ValidationError(ENTITY_FRAME, clashes[0], rule, len(clashes), [])


def _entity_stats(entity: DataFrame, keys: Sequence[str]) -> dict[str, Any]:
    """One job: rows, null timestamps, time range and the row count of the hottest key."""
    per_key = entity.groupBy(*keys).agg(
        F.count(F.lit(1)).alias("n"),
        F.count_if(F.col(EVENT_TS).isNull()).alias("nulls"),
        F.min(micros(EVENT_TS)).alias("lo"),
        F.max(micros(EVENT_TS)).alias("hi"),
    )
    row = per_key.agg(
        F.coalesce(F.sum("n"), F.lit(0)).alias("rows"),
        F.coalesce(F.sum("nulls"), F.lit(0)).alias("nulls"),
        F.coalesce(F.max("n"), F.lit(0)).alias("hottest"),
        F.min("lo").alias("lo"),
        F.max("hi").alias("hi"),
    ).first()
    assert row is not None  # a global aggregate always returns one row
    if row["nulls"]:
        bad = entity.filter(F.col(EVENT_TS).isNull()).select(*keys).limit(SAMPLES).collect()
        samples = [", ".join(f"{k}={r[k]}" for k in keys) for r in bad]
        raise ValidationError(ENTITY_FRAME, EVENT_TS, "null timestamp", int(row["nulls"]), samples)
    return row.asDict()


def write_training_set(
    spark: SparkSession,
    config: Config,
    entities: str,
    features: Sequence[str],
    output: str,
    full_feature_names: bool = False,
    known_at: bool = False,
) -> dict[str, Any]:
    """The ``training-set`` job: entities (Parquet or CSV) -> training set -> Parquet at ``output``."""
    began = time.monotonic()
    repo = FeatureStoreFetchRepository.from_config(spark, config)
    entity_df = read_input(spark, config.resolve(entities))
    target = config.resolve(output)
    result = repo.training_set(entity_df, list(features), full_feature_names, known_at)
    result.write.mode("overwrite").parquet(target)
    written = spark.read.parquet(target)
    return {
        "output": target,
        "rows": written.count(),
        "columns": written.columns,
        "features": list(features),
        "known_at": known_at,
        "seconds": round(time.monotonic() - began, 1),
    }


__all__ = ["FeatureStoreFetchRepository", "write_training_set"]
