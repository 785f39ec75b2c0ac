"""Bad-input rules, checked before anything is written.

The schema rules are checked on the DataFrame's schema (no Spark job). The row rules run as one
narrow aggregate (per-row rule flags, count, time range; no shuffle), and duplicates as a group-by
on a 64-bit hash of the row identity. Only when a rule fails do small jobs fetch up to five sample
keys for the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, DoubleType, FloatType, StructType, TimestampNTZType

from spark_features.errors import ValidationError
from spark_features.features.base import CREATED_TS, EVENT_TS, FeatureView
from spark_features.session import job_description
from spark_features.timeutil import from_micros, lit_ts, micros

FUTURE_TOLERANCE = timedelta(minutes=5)
SAMPLES = 5


def check_schema(view: FeatureView, schema: StructType) -> None:
    """Missing, extra and re-typed columns against the declared schema; naive timestamps."""
    expected = view.stored_schema
    actual = {f.name: f.dataType for f in schema.fields}
    missing = [n for n in expected.fieldNames() if n not in actual]
    if missing:
        raise ValidationError(view.name, ",".join(missing), "missing column", len(missing), [])
    extra = [n for n in actual if n not in expected.fieldNames()]
    if extra:
        raise ValidationError(view.name, ",".join(extra), "undeclared column", len(extra), [])
    for field in expected.fields:
        got: DataType = actual[field.name]
        if isinstance(got, TimestampNTZType):
            raise ValidationError(
                view.name, field.name, "timezone-naive timestamp (TIMESTAMP_NTZ); convert to UTC", 0, []
            )
        if got != field.dataType:
            rule = f"type {got.simpleString()} != declared {field.dataType.simpleString()}"
            raise ValidationError(view.name, field.name, rule, 0, [])


def _row_rules(view: FeatureView, now: datetime) -> dict[tuple[str, str], Column]:
    rules: dict[tuple[str, str], Column] = {}
    for key in view.entity_keys:
        rules[(key, "null join key")] = F.col(key).isNull()
    rules[(EVENT_TS, "null timestamp")] = F.col(EVENT_TS).isNull()
    if view.has_created_timestamp:
        rules[(CREATED_TS, "null timestamp")] = F.col(CREATED_TS).isNull()
    limit = now + FUTURE_TOLERANCE
    rules[(EVENT_TS, f"in the future (after {limit.isoformat()})")] = F.col(EVENT_TS) > lit_ts(limit)
    if not view.allow_nan:
        for field in view.features.fields:
            if isinstance(field.dataType, DoubleType | FloatType):
                value = F.col(field.name)
                rules[(field.name, "NaN or infinite value")] = F.isnan(value) | (F.abs(value) == float("inf"))
    return rules


def _check_duplicates(view: FeatureView, df: DataFrame) -> None:
    """Exact duplicate detection that shuffles one 64-bit hash per row instead of whole rows: rows
    whose identity hash occurs more than once are candidates, and only those are compared exactly."""
    identity = [*view.entity_keys, EVENT_TS] + ([CREATED_TS] if view.has_created_timestamp else [])
    hashed = df.withColumn("_identity_hash", F.xxhash64(*identity))
    repeated = hashed.groupBy("_identity_hash").count().filter(F.col("count") > 1).select("_identity_hash")
    if repeated.isEmpty():
        return
    candidates = hashed.join(repeated, on="_identity_hash", how="left_semi")
    dupes = candidates.groupBy(*identity).count().filter(F.col("count") > 1)
    stats = dupes.agg(F.count(F.lit(1)).alias("groups"), F.sum("count").alias("rows")).first()
    if stats is None or not stats["groups"]:
        return  # hash collisions only
    rule = f"duplicate ({', '.join(identity)})" + (
        "" if view.has_created_timestamp else " without a created_timestamp tie-breaker"
    )
    raise ValidationError(view.name, ",".join(identity), rule, int(stats["rows"]), _samples(view, dupes))


def _samples(view: FeatureView, df: DataFrame) -> list[str]:
    identity = [*view.entity_keys, EVENT_TS]
    rows = df.select(*identity).limit(SAMPLES).collect()
    return [", ".join(f"{name}={row[name]}" for name in identity) for row in rows]


@dataclass(frozen=True)
class RowStats:
    rows: int
    min_ts: datetime | None
    max_ts: datetime | None


def check_rows(
    view: FeatureView,
    df: DataFrame,
    allow_empty: bool = False,
    bounds: tuple[datetime, datetime] | None = None,
    now: datetime | None = None,
) -> RowStats:
    """Row rules (and, with ``bounds``, ``start <= event_timestamp < end``); raises
    ``ValidationError`` on the first failing rule, else returns the count and time range."""
    rules = _row_rules(view, now or datetime.now(UTC))
    if bounds is not None:
        start, end = bounds
        outside = (F.col(EVENT_TS) < lit_ts(start)) | (F.col(EVENT_TS) >= lit_ts(end))
        rules[(EVENT_TS, f"outside the write range [{start.isoformat()}, {end.isoformat()})")] = outside
    flags = [F.count(F.when(cond, 1)).alias(f"r{i}") for i, cond in enumerate(rules.values())]
    label = f"spark_features: row rules of {view.name} v{view.version} (computes the input)"
    with job_description(df.sparkSession, label):
        totals = df.agg(
            F.count(F.lit(1)).alias("rows"),
            F.min(micros(EVENT_TS)).alias("min_ts"),
            F.max(micros(EVENT_TS)).alias("max_ts"),
            *flags,
        ).first()
    assert totals is not None  # a global aggregate always returns one row
    if totals["rows"] == 0 and not allow_empty:
        raise ValidationError(view.name, "*", "empty DataFrame (pass allow_empty=True to accept)", 0, [])
    for i, ((column, rule), cond) in enumerate(rules.items()):
        if totals[f"r{i}"]:
            raise ValidationError(view.name, column, rule, totals[f"r{i}"], _samples(view, df.filter(cond)))
    with job_description(df.sparkSession, f"spark_features: duplicate check of {view.name} v{view.version}"):
        _check_duplicates(view, df)
    return RowStats(int(totals["rows"]), from_micros(totals["min_ts"]), from_micros(totals["max_ts"]))
