"""Feast's online storage format, computed column-wise from Arrow batches (no protobuf objects per row).

Feast stores, per entity and feature, the bytes of a ``feast.types.Value`` proto, under the entity's
serialized key (``serialize_entity_key``, version 3). Both are simple enough to build a whole column at
a time with numpy and pyarrow, which is what lets the online writer skip Feast's per-row Python:

- ``Value``: one tag byte (field number << 3 | wire type), then a little-endian double / float, a
  varint (int32 sign-extended to 64 bits, int64, bool, Unix seconds) or a varint length and the bytes;
  a null (and, as Feast's converter does, a NaN) is the empty message ``b""``.
- entity key v3: ``<I count>``, per join key sorted by name ``<I STRING><I len><name>``, then per value
  ``<I value type><I len><bytes>`` (strings and bytes as they are, integers as ``<i``/``<q``).

This module imports neither Feast nor pyspark (it runs in Spark's Python workers); the tests check
every encoder byte for byte against Feast's own functions. List-typed features take the slow path
(``list_values``: one proto per row, built by Feast's generated classes).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# feast/protos/feast/types/Value.proto field numbers and feast.value_type.ValueType numbers.
VALUE_FIELDS = {
    "bytes_val": 1,
    "string_val": 2,
    "int32_val": 3,
    "int64_val": 4,
    "double_val": 5,
    "float_val": 6,
    "bool_val": 7,
    "unix_timestamp_val": 8,
}
KEY_VALUE_TYPES = {"bytes_val": 1, "string_val": 2, "int32_val": 3, "int64_val": 4}
STRING_TYPE = 2
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
_WIRE = {"double_val": _FIXED64, "float_val": _FIXED32, "string_val": _LENGTH, "bytes_val": _LENGTH}
EMPTY = pa.scalar(b"", pa.binary())
MICROS = 1_000_000
EVENT_TS, CREATED_TS = "event_timestamp", "created_timestamp"


class UnsupportedValueError(TypeError):
    """A value field this encoder does not handle column-wise (list features use ``list_values``)."""


def _binary(data: np.ndarray, lengths: np.ndarray) -> pa.BinaryArray:
    """A binary array of ``len(lengths)`` values cut from the concatenated bytes ``data``."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data, dtype=np.uint8))]
    return pa.Array.from_buffers(pa.binary(), len(lengths), buffers)  # type: ignore[return-value]


def _fixed(values: np.ndarray, dtype: str) -> pa.BinaryArray:
    """Little-endian bytes of each value (``dtype`` such as ``<f8``, ``<u4``)."""
    packed = np.ascontiguousarray(values.astype(dtype)).view(np.uint8)
    width = np.dtype(dtype).itemsize
    return _binary(packed, np.full(len(values), width, dtype=np.int32))


_SHIFTS = np.arange(0, 70, 7, dtype=np.uint64)


def varints(values: np.ndarray) -> pa.BinaryArray:
    """Protobuf base-128 varints of int64 values (negative ones as 10-byte two's complement)."""
    unsigned = values.astype(np.int64).view(np.uint64)[:, None]
    groups = ((unsigned >> _SHIFTS) & np.uint64(0x7F)).astype(np.uint8)
    lengths = 1 + ((unsigned >> _SHIFTS[1:]) != 0).sum(axis=1).astype(np.int32)
    position = np.arange(10, dtype=np.int32)
    groups[position < (lengths - 1)[:, None]] |= 0x80
    return _binary(groups[position < lengths[:, None]], lengths)


def _join(*pieces: pa.Array | pa.Scalar) -> pa.BinaryArray:
    return pc.binary_join_element_wise(*pieces, EMPTY)  # type: ignore[no-any-return]


def _tag(field: str) -> pa.Scalar:
    return pa.scalar(bytes([VALUE_FIELDS[field] << 3 | _WIRE.get(field, _VARINT)]), pa.binary())


def _present(column: pa.Array) -> np.ndarray:
    """Rows Feast stores a value for: not null and, for floating columns, not NaN (Feast: ``pd.isnull``)."""
    valid = column.is_valid()
    if pa.types.is_floating(column.type):
        valid = pc.and_(valid, pc.invert(pc.is_nan(column.fill_null(0))))
    return np.asarray(valid.to_numpy(zero_copy_only=False), dtype=bool)


def _numbers(column: pa.Array, dtype: Any) -> np.ndarray:
    return np.asarray(column.fill_null(0).to_numpy(zero_copy_only=False)).astype(dtype)


def epoch_micros(column: pa.Array) -> np.ndarray:
    """Microseconds since the epoch of a timestamp column (nulls as 0)."""
    return _numbers(column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()), np.int64)


def value_bytes(column: pa.Array, field: str) -> pa.BinaryArray:
    """The serialized ``Value`` proto of every row; ``field`` is the proto field (``double_val``, ...)."""
    present = pa.array(_present(column))
    if field == "double_val":
        body = _fixed(_numbers(column, np.float64), "<f8")
    elif field == "float_val":
        body = _fixed(_numbers(column, np.float32), "<f4")
    elif field in ("int32_val", "int64_val", "bool_val"):
        body = varints(_numbers(column.cast(pa.int64()), np.int64))
    elif field == "unix_timestamp_val":  # whole seconds, floored (Feast's converter)
        body = varints(epoch_micros(column) // MICROS)
    elif field in ("string_val", "bytes_val"):
        data = column.cast(pa.binary()).fill_null(b"")
        body = _join(varints(_numbers(pc.binary_length(data), np.int64)), data)
    else:
        raise UnsupportedValueError(f"value field {field!r} is not encoded column-wise")
    return pc.if_else(present, _join(_tag(field), body), EMPTY)  # type: ignore[no-any-return]


def value_texts(column: pa.Array, field: str) -> list[str | None]:
    """Feast's SQLite ``value_text`` column (``extract_text_and_num``): the string, ``str()`` of a number
    or bool, None for nulls and every other type."""
    if field not in ("string_val", "int32_val", "int64_val", "double_val", "float_val", "bool_val"):
        return [None] * len(column)
    if field == "string_val":
        return column.to_pylist()  # type: ignore[no-any-return]
    present = _present(column)
    python = column.cast(pa.float64()) if field == "float_val" else column  # str() of the float32 as a double
    texts: list[str | None] = list(map(str, python.fill_null(False if field == "bool_val" else 0).to_pylist()))
    for i in np.flatnonzero(~present):
        texts[i] = None
    return texts


def key_prefix(names: Sequence[str]) -> bytes:
    """The constant head of a v3 serialized entity key: the count and the sorted join-key names."""
    out = [struct.pack("<I", len(names))]
    for name in sorted(names):
        encoded = name.encode("utf8")
        out += [struct.pack("<II", STRING_TYPE, len(encoded)), encoded]
    return b"".join(out)


def _key_value(column: pa.Array, field: str) -> list[pa.Array | pa.Scalar]:
    if field == "int64_val":
        return [pa.scalar(struct.pack("<II", KEY_VALUE_TYPES[field], 8)), _fixed(_numbers(column, np.int64), "<i8")]
    if field == "int32_val":
        return [pa.scalar(struct.pack("<II", KEY_VALUE_TYPES[field], 4)), _fixed(_numbers(column, np.int32), "<i4")]
    if field in ("string_val", "bytes_val"):
        data = column.cast(pa.binary())
        lengths = _fixed(_numbers(pc.binary_length(data), np.uint32), "<u4")
        return [pa.scalar(struct.pack("<I", KEY_VALUE_TYPES[field])), lengths, data]
    raise UnsupportedValueError(f"join keys of value field {field!r} cannot be serialized by Feast")


def entity_keys(batch: pa.RecordBatch, keys: Sequence[tuple[str, str]], suffix: bytes = b"") -> pa.BinaryArray:
    """Feast's ``serialize_entity_key`` (version 3) of every row, followed by ``suffix`` (Redis: the project)."""
    pieces: list[pa.Array | pa.Scalar] = [pa.scalar(key_prefix([name for name, _ in keys]))]
    for name, field in sorted(keys):
        pieces += _key_value(batch.column(name), field)
    pieces.append(pa.scalar(suffix))
    return _join(*pieces)


def _local_shift_is_zero() -> bool:
    return time.timezone == 0 and time.altzone == 0


def sqlite_seconds(micros: np.ndarray) -> np.ndarray:
    """Feast's SQLite ``event_ts``/``created_ts``: ``int(naive_utc.timestamp())``, i.e. the UTC wall time
    read as *local* time by Python's datetime adapter (identical to Unix seconds when the process runs in
    UTC, as Spark workers here do). Truncates toward zero like ``int()``."""
    seconds = micros // MICROS + ((micros < 0) & (micros % MICROS != 0))
    if _local_shift_is_zero():
        return np.asarray(seconds, dtype=np.int64)
    unique, inverse = np.unique(micros, return_inverse=True)
    local = [int(datetime.fromtimestamp(us / MICROS, UTC).replace(tzinfo=None).timestamp()) for us in unique.tolist()]
    return np.asarray(local, dtype=np.int64)[inverse]


def timestamp_protos(micros: np.ndarray) -> pa.BinaryArray:
    """``google.protobuf.Timestamp`` bytes (Feast's Redis ``_ts:<view>`` field): seconds (floored) and
    nanos, each omitted when zero."""
    seconds, nanos = micros // MICROS, (micros % MICROS) * 1000
    with_seconds = pc.if_else(pa.array(seconds != 0), _join(pa.scalar(b"\x08"), varints(seconds)), EMPTY)
    with_nanos = pc.if_else(pa.array(nanos != 0), _join(pa.scalar(b"\x10"), varints(nanos)), EMPTY)
    return _join(with_seconds, with_nanos)


def list_values(column: pa.Array, field: str) -> list[bytes]:
    """Slow path for list features: one ``Value`` proto per row (null -> ``b""``)."""
    from feast.protos.feast.types import Value_pb2

    element = {"unix_timestamp_list_val": "int64_list_val"}.get(field, field)
    wrap = getattr(Value_pb2, "".join(p.capitalize() for p in element.split("_")[:-1]))
    out = []
    for value in column.to_pylist():
        if value is None:
            out.append(b"")
            continue
        if field == "unix_timestamp_list_val":
            value = [int(t.timestamp()) for t in value]
        out.append(Value_pb2.Value(**{field: wrap(val=value)}).SerializeToString())
    return out


def value_field(value_type: str) -> str:
    """The ``Value`` proto field of a Feast value type name (``DOUBLE`` -> ``double_val``,
    ``DOUBLE_LIST`` -> ``double_list_val``)."""
    return f"{value_type.lower()}_val"


def feature_values(batch: pa.RecordBatch, name: str, field: str) -> list[bytes]:
    column = batch.column(name)
    if field.endswith("_list_val"):
        return list_values(column, field)
    return value_bytes(column, field).to_pylist()  # type: ignore[no-any-return]


def created_micros(batch: pa.RecordBatch, has_created_timestamp: bool) -> np.ndarray | None:
    return epoch_micros(batch.column(CREATED_TS)) if has_created_timestamp else None
