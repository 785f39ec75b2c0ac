"""SQLite's own insert cost for Feast's online table: the lower bound of any SQLite materialize.

Lets Feast create its SQLite table for ``bench/materialize.py``'s view (``feast_provider.apply``),
encodes ``--entities`` entities x 2 double features with the engine's writer (``SqliteWriter.rows``,
untimed), then times only the newer-wins upserts, ``SQLITE_TRANSACTION_ROWS`` entities per
transaction, from one process, in entity-key order (the cheapest order for the B-tree). No Spark, no
reading, no encoding: what remains is SQLite.
Last line: ``RESULT sqlite_insert_seconds=<s> entities_per_second=<n>``.

    .venv/bin/python bench/sqlite_floor.py [--entities 1000000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from materialize import VIEW, config

from spark_features.config import OnlineStoreConfig
from spark_features.feast_provider import apply, feature_store
from spark_features.online import write_spec
from spark_features.online_writer import SqliteWriter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.entities
    with tempfile.TemporaryDirectory(prefix="bench_sqlite_") as tmp:
        work = Path(tmp)
        cfg = config(work, "floor", OnlineStoreConfig(type="sqlite", path=str(work / "online.db")))
        store = feature_store(cfg)
        apply(store, [VIEW], cfg)
        writer = SqliteWriter(write_spec(store, VIEW))
        writer.prepare()
        rng = np.random.default_rng(0)
        batch = pa.RecordBatch.from_pydict(
            {
                "symbol": [f"S{i:07d}" for i in range(n)],
                "timeframe": ["1m"] * n,
                "event_timestamp": pa.array(np.full(n, 1_700_000_000_000_000), pa.timestamp("us", tz="UTC")),
                "f1": rng.random(n),
                "f2": rng.random(n),
            }
        )
        step = writer.group_rows
        groups = [writer.rows(batch.slice(i, step)) for i in range(0, n, step)]
        began = time.perf_counter()
        for rows in groups:
            writer.conn.execute("BEGIN IMMEDIATE")
            writer.conn.executemany(writer.upsert, rows)
            writer.conn.execute("COMMIT")
        seconds = time.perf_counter() - began
        writer.conn.close()
    print(f"{n} entities x {len(VIEW.features.fields)} features, {len(groups)} transactions: {seconds:.2f}s")
    print(f"RESULT sqlite_insert_seconds={seconds:.2f} entities_per_second={n / seconds:.0f}")


if __name__ == "__main__":
    main()
