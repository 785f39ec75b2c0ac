"""Redis side of the online writer: newer-wins ``HSET``s into Feast's Redis layout.

Per entity, Feast keeps one hash (key: the serialized entity key plus the project) with a field per
feature and a ``_ts:<view>`` Timestamp proto. A Lua script per chunk of entities compares the stored
timestamp (and our ``_created_us:<view>`` field) with the new one and ``HSET``s only newer rows, so a
value is never replaced by an older one; chunks are pipelined. Imports neither pyspark nor Feast.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import redis

from spark_features.online_encoding import (
    EVENT_TS,
    created_micros,
    entity_keys,
    epoch_micros,
    feature_values,
    timestamp_protos,
)

if TYPE_CHECKING:
    from spark_features.online_writer import WriteSpec

REDIS_CHUNK = 1_000  # entities per script call: bounds how long one call blocks the server

# KEYS: entity hashes. ARGV: ts field, created field ('' if the view has none), feature count, feature
# fields, then per entity: Timestamp proto, [created microseconds], feature values. Returns rows written.
NEWER_WINS_LUA = """
local function varint(s, pos)
  local groups, n = {}, 0
  repeat
    local b = string.byte(s, pos)
    pos, n = pos + 1, n + 1
    groups[n] = b % 128
  until b < 128
  local value, scale = 0, 1
  if n == 10 then -- a negative int64: two's complement
    for i = 1, 9 do value = value + (127 - groups[i]) * scale; scale = scale * 128 end
    return -(value + 1), pos
  end
  for i = 1, n do value = value + groups[i] * scale; scale = scale * 128 end
  return value, pos
end
local function seconds_nanos(proto)
  local fields, pos = {0, 0}, 1
  while pos <= #proto do
    local tag = string.byte(proto, pos)
    local value
    value, pos = varint(proto, pos + 1)
    fields[tag / 8] = value
  end
  return fields[1], fields[2]
end
local ts_field, created_field, features = ARGV[1], ARGV[2], tonumber(ARGV[3])
local has_created = created_field ~= ''
local per = 1 + features + (has_created and 1 or 0)
local base = 3 + features
local written = 0
for i, key in ipairs(KEYS) do
  local at = base + (i - 1) * per
  local new_ts = ARGV[at + 1]
  local stored = redis.call('HGET', key, ts_field)
  local newer = true
  if stored then
    local s1, n1 = seconds_nanos(new_ts)
    local s0, n0 = seconds_nanos(stored)
    if s1 ~= s0 then newer = s1 > s0 elseif n1 ~= n0 then newer = n1 > n0
    elseif has_created then
      local old_created = redis.call('HGET', key, created_field)
      newer = not old_created or tonumber(ARGV[at + 2]) >= tonumber(old_created)
    end
  end
  if newer then
    local args = {ts_field, new_ts}
    local first = at + 1 + (has_created and 1 or 0)
    for j = 1, features do args[#args + 1] = ARGV[3 + j]; args[#args + 1] = ARGV[first + j] end
    if has_created then args[#args + 1] = created_field; args[#args + 1] = ARGV[at + 2] end
    redis.call('HSET', key, unpack(args))
    written = written + 1
  end
end
return written
"""


def redis_client(connection_string: str) -> redis.Redis:
    """A client for Feast's ``host:port[,key=value...]`` connection string (Feast's own parsing)."""
    parts = connection_string.split(",")
    host, _, port = next(p for p in parts if "=" not in p).partition(":")
    options: dict[str, Any] = {}
    for part in parts:
        if "=" in part:
            key, value = part.split("=", 1)
            try:
                options[key] = json.loads(value)
            except json.JSONDecodeError:
                options[key] = value
    return redis.Redis(host=host, port=int(port or 6379), **options)


class RedisWriter:
    """Newer-wins ``HSET``s of pre-encoded fields, by a pipelined Lua script (see the module docstring)."""

    def __init__(self, spec: WriteSpec) -> None:
        self.spec = spec
        self.group_rows = 0  # each Arrow batch is one pipeline
        self.client = redis_client(spec.target)
        self.script = self.client.register_script(NEWER_WINS_LUA)
        created = f"_created_us:{spec.table}" if spec.has_created_timestamp else ""
        self.head: list[Any] = [f"_ts:{spec.table}", created, len(spec.features), *spec.redis_fields]

    def prepare(self) -> None:
        """Nothing to set up: the script is loaded by the first pipeline that needs it."""

    def arguments(self, batch: pa.RecordBatch) -> tuple[list[bytes], list[Any]]:
        """Entity hash keys and, per entity, its script arguments (flattened, in entity order)."""
        keys = entity_keys(batch, self.spec.keys, self.spec.project.encode("utf8")).to_pylist()
        columns = [timestamp_protos(epoch_micros(batch.column(EVENT_TS))).to_pylist()]
        created_us = created_micros(batch, self.spec.has_created_timestamp)
        if created_us is not None:
            columns.append(pc.cast(pa.array(created_us), pa.string()).to_pylist())
        columns += [feature_values(batch, name, field) for name, field in self.spec.features]
        flat: list[Any] = [None] * (batch.num_rows * len(columns))
        for j, column in enumerate(columns):
            flat[j :: len(columns)] = column
        return keys, flat

    def write(self, batch: pa.RecordBatch) -> int:
        """Write one batch; returns the entities whose rows were newer and written."""
        if batch.num_rows == 0:
            return 0
        keys, flat = self.arguments(batch)
        per = len(flat) // len(keys)
        with self.client.pipeline(transaction=False) as pipe:
            for start in range(0, len(keys), REDIS_CHUNK):
                end = start + REDIS_CHUNK
                self.script(keys=keys[start:end], args=self.head + flat[start * per : end * per], client=pipe)
            return sum(pipe.execute())
