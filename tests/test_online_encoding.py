"""The column-wise encoders produce exactly the bytes Feast's own functions produce, type by type."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.utils import _columns_to_proto_values, to_naive_utc
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from spark_features.online_encoding import (
    KEY_VALUE_TYPES,
    VALUE_FIELDS,
    entity_keys,
    list_values,
    sqlite_seconds,
    timestamp_protos,
    value_bytes,
    value_texts,
    varints,
)

TS = pa.timestamp("us", tz="UTC")
T = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
BEFORE_1970 = datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)
# Per Feast value type: an Arrow column with nulls, zeros, negatives and non-ASCII text.
COLUMNS: dict[str, tuple[ValueType, pa.Array]] = {
    "double_val": (ValueType.DOUBLE, pa.array([1.5, None, 0.0, -0.0, float("nan"), -1e300, 0.1], pa.float64())),
    "float_val": (ValueType.FLOAT, pa.array([0.1, None, 0.0, -2.5, float("nan"), 3.4e38, 1.0], pa.float32())),
    "int32_val": (ValueType.INT32, pa.array([1, None, 0, -1, 2**31 - 1, -(2**31), 300], pa.int32())),
    "int64_val": (ValueType.INT64, pa.array([1, None, 0, -1, 2**40, -(2**50), 128], pa.int64())),
    "string_val": (ValueType.STRING, pa.array(["a", None, "", "é" * 300, "x\x00y", "日本", "z"], pa.string())),
    "bool_val": (ValueType.BOOL, pa.array([True, None, False, True, False, True, False], pa.bool_())),
    "bytes_val": (ValueType.BYTES, pa.array([b"\x00", None, b"", b"\xff" * 200, b"ab", b"c", b"d"], pa.binary())),
    "unix_timestamp_val": (
        ValueType.UNIX_TIMESTAMP,
        pa.array([T, T - timedelta(days=20000), BEFORE_1970, datetime(1970, 1, 1, tzinfo=UTC), T, T, T], TS),
    ),
}


def feast_bytes(column: pa.Array, value_type: ValueType) -> list[bytes]:
    """What Feast's materialize stores: ``_columns_to_proto_values`` (its Arrow -> proto converter)."""
    batch = pa.RecordBatch.from_arrays([column], names=["c"])
    return [v.SerializeToString() for v in _columns_to_proto_values(batch, [("c", value_type)])["c"]]


def test_field_and_type_numbers_are_feasts() -> None:
    assert {name: Value.DESCRIPTOR.fields_by_name[name].number for name in VALUE_FIELDS} == VALUE_FIELDS
    assert {
        "bytes_val": ValueType.BYTES.value,
        "string_val": ValueType.STRING.value,
        "int32_val": ValueType.INT32.value,
        "int64_val": ValueType.INT64.value,
    } == KEY_VALUE_TYPES


@pytest.mark.parametrize("field", sorted(COLUMNS))
def test_value_bytes_equal_feasts_converter(field: str) -> None:
    value_type, column = COLUMNS[field]
    ours = value_bytes(column, field).to_pylist()
    assert ours == feast_bytes(column, value_type)
    assert column[1].is_valid or ours[1] == b""  # null


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("int64_val", 2**63 - 1),  # Feast's pandas path rounds these through float64; the proto is the reference
        ("int64_val", -(2**63)),
        ("int32_val", -(2**31)),
        ("double_val", float("inf")),
        ("bool_val", False),
        ("string_val", ""),
    ],
)
def test_value_bytes_equal_protobuf_at_the_edges(field: str, value: Any) -> None:
    arrow_type = {"int64_val": pa.int64(), "int32_val": pa.int32(), "double_val": pa.float64()}
    column = pa.array([value], arrow_type.get(field))
    assert value_bytes(column, field).to_pylist() == [Value(**{field: value}).SerializeToString()]


def test_null_timestamps_are_empty_values() -> None:
    # Feast's converter turns a null timestamp into INT64_MIN seconds; an empty Value reads back as null.
    assert value_bytes(pa.array([None, T], TS), "unix_timestamp_val").to_pylist()[0] == b""


def test_varints_equal_protobuf() -> None:
    values = [0, 1, 127, 128, 300, 2**31 - 1, -1, -(2**31), 2**62, 2**63 - 1, -(2**63)]
    ours = varints(np.array(values, dtype=np.int64)).to_pylist()
    assert ours == [Value(int64_val=v).SerializeToString()[1:] for v in values]


@pytest.mark.parametrize("field", ["double_val", "float_val", "int32_val", "int64_val", "string_val", "bool_val"])
def test_value_texts_equal_feasts_sqlite_text(field: str) -> None:
    value_type, column = COLUMNS[field]
    expected = []
    for raw in feast_bytes(column, value_type):
        value = Value()
        value.ParseFromString(raw)
        expected.append(extract_text_and_num(value, False)[0])
    assert value_texts(column, field) == expected


def test_value_texts_of_other_types_are_null() -> None:
    assert value_texts(COLUMNS["unix_timestamp_val"][1], "unix_timestamp_val") == [None] * 7


def test_list_values_are_list_protos() -> None:
    column = pa.array([[1.0, 2.5], None, []], pa.list_(pa.float64()))
    expected = [
        Value(double_list_val={"val": [1.0, 2.5]}).SerializeToString(),
        b"",
        Value(double_list_val={}).SerializeToString(),
    ]
    assert list_values(column, "double_list_val") == expected


def key_proto(names: list[str], values: list[Value]) -> EntityKey:
    return EntityKey(join_keys=names, entity_values=values)


@pytest.mark.parametrize(
    ("keys", "columns", "protos"),
    [
        (  # two string keys given out of name order; Feast sorts by name
            [("timeframe", "string_val"), ("symbol", "string_val")],
            [pa.array(["1m", "5m", ""]), pa.array(["AAA", "é", "B"])],
            lambda i, c: [Value(string_val=c[0][i]), Value(string_val=c[1][i])],
        ),
        (
            [("id", "int64_val")],
            [pa.array([0, -1, 2**63 - 1], pa.int64())],
            lambda i, c: [Value(int64_val=c[0][i])],
        ),
        (
            [("n", "int32_val"), ("b", "bytes_val")],
            [pa.array([7, -(2**31), 0], pa.int32()), pa.array([b"\x00", b"", b"xyz"], pa.binary())],
            lambda i, c: [Value(int32_val=c[0][i]), Value(bytes_val=c[1][i])],
        ),
    ],
)
def test_entity_keys_equal_serialize_entity_key(
    keys: list[tuple[str, str]], columns: list[pa.Array], protos: Any
) -> None:
    batch = pa.RecordBatch.from_arrays(columns, names=[name for name, _ in keys])
    python = [c.to_pylist() for c in columns]
    names = [name for name, _ in keys]
    expected = [
        serialize_entity_key(key_proto(names, protos(i, python)), entity_key_serialization_version=3)
        for i in range(batch.num_rows)
    ]
    assert entity_keys(batch, keys).to_pylist() == expected
    assert entity_keys(batch, keys, b"proj").to_pylist() == [e + b"proj" for e in expected]


def test_timestamp_protos_equal_protobuf_timestamps() -> None:
    times = [
        T,
        BEFORE_1970,
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
        T.replace(microsecond=0),
    ]
    micros = pa.array(times, TS).cast(pa.int64()).to_numpy()
    expected = []
    for t in times:
        proto = Timestamp()
        proto.FromDatetime(t)
        expected.append(proto.SerializeToString())
    assert timestamp_protos(micros).to_pylist() == expected


def test_sqlite_seconds_equal_feasts_datetime_adapter() -> None:
    times = [T, BEFORE_1970, datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC)]
    micros = pa.array(times, TS).cast(pa.int64()).to_numpy()
    # feast/infra/online_stores/sqlite.py registers int(val.timestamp()) for naive UTC datetimes
    assert sqlite_seconds(micros).tolist() == [int(to_naive_utc(t).timestamp()) for t in times]
