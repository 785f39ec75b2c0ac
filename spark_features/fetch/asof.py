"""Point-in-time (as-of) join: pure transforms, no I/O.

For every entity row and every requested view, the view's row with the greatest
``(event_timestamp, created_timestamp)`` among rows with the same keys and
``event_timestamp <= entity event_timestamp`` (and, with a TTL, ``>= entity time - ttl``; in known-at
mode also ``created_timestamp <= entity time``). See DESIGN.md, "Point-in-time semantics".

No row is ever paired with more than one row of the other side (no range join), nothing is
collected, and each step is a sort-based pass whose memory is bounded by a partition. Per set of
views sharing join keys, one pass:

1. entity rows and feature rows become rows of one frame: join keys, the time a row becomes
   available (a feature row's ``event_timestamp``, in known-at mode ``max(event, created)``; an
   entity row's ``event_timestamp``), a side flag that sorts feature rows before entity rows at equal
   times, a tie-breaker (created time), the whole entity row as one struct, and per view one struct
   ``(order, values)`` that is null on rows of other views.
2. the frame is hash-partitioned by (keys, time bucket) and sorted by (available, side, tie) inside
   each bucket; a running "best so far" per view (the last non-null value; ``max_by`` on
   ``(event, created)`` in known-at mode) gives every entity row the best candidate of its bucket.
3. with more than one bucket (skew: a hot key's rows spread over many tasks), the last row of each
   (keys, bucket) carries the bucket's best. Entity rows and those summary rows (a small frame) are
   re-partitioned by keys alone and, in the same order, a second running best over the summaries
   gives the best candidate of all earlier buckets; the better of the two wins. Exact, with no
   self-join, so the feature rows are read, shuffled and sorted once.
4. a winner older than ``entity time - ttl`` counts as no candidate: its features are null.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, IntegralType, LongType

from spark_features.errors import ValidationError
from spark_features.features.base import CREATED_TS, EVENT_TS, FeatureView

PREFIX = "_sf_"
AVAILABLE, SIDE, BUCKET, ENTITY = f"{PREFIX}available", f"{PREFIX}side", f"{PREFIX}bucket", f"{PREFIX}entity"
TIE, LAST = f"{PREFIX}tie", f"{PREFIX}last"
FEATURE_SIDE, ENTITY_SIDE = 0, 1
ENTITY_FRAME = "entity_df"

Keys = tuple[tuple[str, DataType], ...]


@dataclass(frozen=True)
class Lookup:
    """One view's part of a training set: its stored rows (already range-filtered), the stored
    feature names to take and the output column name of each."""

    view: FeatureView
    table: DataFrame
    features: tuple[str, ...]
    names: tuple[str, ...]


@dataclass(frozen=True)
class TimeBuckets:
    """``count`` equal event-time buckets of ``width_us`` microseconds from ``origin_us`` (the first
    entity time); older feature rows fall into up to ``count`` more buckets before it (the oldest
    takes the rest). ``count == 1``: no bucketing.

    Any bucketing that is monotone in time gives the same, exact result; the choice only moves work
    between the first, parallel sort (inside a bucket) and the second one (entity rows and one
    summary row per key and bucket)."""

    origin_us: int = 0
    width_us: int = 1
    count: int = 1

    def of(self, available: Column) -> Column:
        if self.count <= 1:
            return F.lit(0)
        offset = F.unix_micros(available) - F.lit(self.origin_us)
        index = F.floor(offset / F.lit(self.width_us))
        return F.greatest(F.least(index, F.lit(self.count - 1)), F.lit(-self.count)).cast("int")


def join_types(entity: DataFrame, views: Sequence[FeatureView]) -> dict[str, Keys]:
    """Per view, its join keys with the type both sides are compared in; raises ``ValidationError``
    naming a missing or incomparable key column of the entity frame."""
    actual = {f.name: f.dataType for f in entity.schema.fields}
    out: dict[str, Keys] = {}
    for view in views:
        keys: list[tuple[str, DataType]] = []
        for field in view.key_types.fields:
            got = actual.get(field.name)
            if got is None:
                rule = f"missing join key column of view {view.name!r}"
                raise ValidationError(ENTITY_FRAME, field.name, rule, 0, [])
            if got == field.dataType:
                keys.append((field.name, got))
            elif isinstance(got, IntegralType) and isinstance(field.dataType, IntegralType):
                keys.append((field.name, LongType()))
            else:
                types = f"{got.simpleString()} != {field.dataType.simpleString()}"
                rule = f"join key type {types} in view {view.name!r}"
                raise ValidationError(ENTITY_FRAME, field.name, rule, 0, [])
        out[view.name] = tuple(keys)
    return out


def asof_join(
    entity: DataFrame, lookups: Sequence[Lookup], known_at: bool = False, buckets: TimeBuckets | None = None
) -> DataFrame:
    """The entity rows, unchanged and one output row per input row, followed by the requested
    features (in ``lookups`` order). Views sharing join keys (names and types) share one pass."""
    buckets = buckets or TimeBuckets()
    types = join_types(entity, [lookup.view for lookup in lookups])
    groups: dict[Keys, list[Lookup]] = {}
    for lookup in lookups:
        groups.setdefault(tuple(sorted(types[lookup.view.name])), []).append(lookup)
    out = entity
    for keys, members in groups.items():
        out = out.transform(_one_pass, keys=keys, lookups=members, known_at=known_at, buckets=buckets)
    names = [name for lookup in lookups for name in lookup.names]
    return out.select(*[F.col(c) for c in entity.columns], *[F.col(n) for n in names])


def _slot(index: int) -> str:
    return f"{PREFIX}view{index}"


def _order(value: Column) -> Column:
    """The ordering of a candidate; null for rows that are not a candidate of this view."""
    return F.when(value.isNotNull(), value.getField("order"))


def _entity_rows(entity: DataFrame, keys: Keys) -> DataFrame:
    return entity.select(
        *[F.col(name).cast(dtype).alias(name) for name, dtype in keys],
        F.col(EVENT_TS).alias(AVAILABLE),
        F.lit(ENTITY_SIDE).alias(SIDE),
        F.struct(*[F.col(c) for c in entity.columns]).alias(ENTITY),
    )


def _feature_rows(lookup: Lookup, slot: str, keys: Keys, known_at: bool) -> DataFrame:
    view = lookup.view
    created = [F.col(CREATED_TS).alias("created")] if view.has_created_timestamp else []
    available = F.greatest(F.col(EVENT_TS), F.col(CREATED_TS)) if known_at and created else F.col(EVENT_TS)
    value = F.struct(
        F.struct(F.col(EVENT_TS).alias("ts"), *created).alias("order"),
        F.struct(*[F.col(f) for f in lookup.features]).alias("values"),
    )
    # rows of one event time sort by created time, so the last one seen is the greatest
    tie = [F.col(CREATED_TS).alias(TIE)] if created and not known_at else []
    return lookup.table.select(
        *[F.col(name).cast(dtype).alias(name) for name, dtype in keys],
        available.alias(AVAILABLE),
        F.lit(FEATURE_SIDE).alias(SIDE),
        *tie,
        value.alias(slot),
    )


def _running_best(value: Column, known_at: bool) -> Column:
    """Rows arrive sorted by (available, side, tie). Normally that is the candidates' order, so the
    last non-null value is the best (cheaper than comparing); in known-at mode a row available later
    can be an older event, so the best is chosen by its (event, created) order."""
    return F.max_by(value, _order(value)) if known_at else F.last(value, ignorenulls=True)


def _later(local: Column, carried: Column) -> Column:
    """The candidate with the greater order (the bucket's own one on null or equal)."""
    return (
        F.when(carried.isNull(), local)
        .when(local.isNull() | (_order(carried) > _order(local)), carried)
        .otherwise(local)
    )


def _with_carry(windowed: DataFrame, keys: list[str], order: list[str], slots: list[str], known_at: bool) -> DataFrame:
    """Combine each entity row's in-bucket best with the best of all earlier buckets of its key.

    A bucket's last row holds the bucket's best (a running value); in the same order those summary
    rows of earlier buckets precede an entity row, and only an entity row that is itself the last of
    its bucket also sees its own bucket's summary, which then equals its own best."""
    rows = windowed.filter((F.col(SIDE) == ENTITY_SIDE) | F.col(LAST))
    across = Window.partitionBy(*keys).orderBy(BUCKET, *order).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    carried = [_running_best(F.when(F.col(LAST), F.col(s)), known_at).over(across) for s in slots]
    return rows.select(
        SIDE, ENTITY, *[_later(F.col(s), carry).alias(s) for s, carry in zip(slots, carried, strict=True)]
    )


def _feature_columns(lookup: Lookup, slot: str) -> list[Column]:
    value = F.col(slot)
    fresh = value.isNotNull()
    if lookup.view.ttl is not None:
        ttl_us = int(lookup.view.ttl.total_seconds() * 1_000_000)
        oldest = F.unix_micros(F.col(ENTITY).getField(EVENT_TS)) - F.lit(ttl_us)
        fresh = fresh & (F.unix_micros(value.getField("order").getField("ts")) >= oldest)
    return [
        F.when(fresh, value.getField("values").getField(f)).alias(n)
        for f, n in zip(lookup.features, lookup.names, strict=True)
    ]


def _one_pass(
    entity: DataFrame, keys: Keys, lookups: Sequence[Lookup], known_at: bool, buckets: TimeBuckets
) -> DataFrame:
    key_names = [name for name, _ in keys]
    slots = [_slot(i) for i in range(len(lookups))]
    frames = [_entity_rows(entity, keys)] + [
        _feature_rows(lookup, slot, keys, known_at) for lookup, slot in zip(lookups, slots, strict=True)
    ]
    union = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
    order = [AVAILABLE, SIDE] + ([TIE] if TIE in union.columns else [])  # no tie without created times
    split = buckets.count > 1
    bucketed = union.withColumn(BUCKET, buckets.of(F.col(AVAILABLE))) if split else union
    in_bucket = Window.partitionBy(*key_names, *([BUCKET] if split else [])).orderBy(*order)
    running = in_bucket.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    best = [_running_best(F.col(s), known_at).over(running).alias(s) for s in slots]
    if not split:
        picked = bucketed.select(SIDE, ENTITY, *best)
    else:
        last = F.lead(F.lit(True)).over(in_bucket).isNull().alias(LAST)  # lead/lag take no custom frame
        windowed = bucketed.select(*key_names, BUCKET, *order, ENTITY, *best, last)
        picked = _with_carry(windowed, key_names, order, slots, known_at)
    features = [c for lookup, slot in zip(lookups, slots, strict=True) for c in _feature_columns(lookup, slot)]
    return picked.filter(F.col(SIDE) == ENTITY_SIDE).select(
        *[F.col(ENTITY).getField(c).alias(c) for c in entity.columns], *features
    )
