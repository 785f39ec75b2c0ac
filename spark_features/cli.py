"""Command line: ``spark-features COMMAND`` and the ``jobs/*.py`` entries submitted by spark-submit.

This module only parses arguments, loads config, builds the session (the edge) and calls one
package function per command. Errors of this package exit with status 2 and their message.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta

from pyspark.sql import SparkSession

from spark_features.config import Config, load_config
from spark_features.errors import SparkFeaturesError
from spark_features.timeutil import parse_utc

log = logging.getLogger("spark_features")


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _session(config: Config) -> SparkSession:
    from spark_features.session import build_session

    return build_session(config)


def cmd_generate_bars(args: argparse.Namespace, config: Config) -> object:
    from spark_features.pipelines import generate_sample_bars

    return generate_sample_bars(
        _session(config), config, args.symbols, parse_utc(args.start), parse_utc(args.end), args.seed
    )


def cmd_backfill(args: argparse.Namespace, config: Config) -> object:
    from spark_features.pipelines import run_backfill

    return run_backfill(
        _session(config),
        config,
        parse_utc(args.start),
        parse_utc(args.end),
        _csv(args.features) if args.features else None,
        tuple(_csv(args.timeframes)),
        args.chunk,
        args.force,
    )


def cmd_ingest(args: argparse.Namespace, config: Config) -> object:
    from spark_features.pipelines import ingest_file

    return ingest_file(
        _session(config),
        config,
        args.input,
        args.view,
        _csv(args.keys),
        args.timestamp_column,
        args.created_column,
        timedelta(seconds=args.ttl) if args.ttl else None,
        args.version,
        args.allow_nan,
    )


def cmd_quickstart(args: argparse.Namespace, config: Config) -> object:
    from spark_features.pipelines import quickstart

    return quickstart(_session(config), config, args.symbols, args.days)


def cmd_training_set(args: argparse.Namespace, config: Config) -> object:
    from spark_features.fetch.repository import write_training_set

    return write_training_set(
        _session(config),
        config,
        args.entities,
        _csv(args.features),
        args.output,
        args.full_feature_names,
        args.known_at,
    )


def cmd_materialize(args: argparse.Namespace, config: Config) -> object:
    from dataclasses import asdict

    from spark_features.online import materialize, resolve_views

    spark = _session(config)
    views = resolve_views(spark, config, _csv(args.views)) if args.views else None
    return [asdict(r) for r in materialize(spark, config, views, parse_utc(args.start), parse_utc(args.end))]


def cmd_online(args: argparse.Namespace, config: Config) -> object:
    # No Spark session here: an online read goes through Feast's registry and online store only.
    from spark_features.online import online_lookup

    return online_lookup(config, args.entity, _csv(args.features) if args.features else None)


def build_parser() -> argparse.ArgumentParser:
    conf_help = "conf file (default: $SPARK_FEATURES_CONF or conf/local.yaml)"
    parser = argparse.ArgumentParser(prog="spark-features", description=__doc__.splitlines()[0])
    parser.add_argument("--conf", help=conf_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--conf", default=argparse.SUPPRESS, help=conf_help)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("quickstart", parents=[common], help="sample bars -> every feature -> store, with a summary")
    p.add_argument("--symbols", type=int, default=20)
    p.add_argument("--days", type=int, default=30)
    p.set_defaults(run=cmd_quickstart)

    p = sub.add_parser("generate-bars", parents=[common], help="write deterministic synthetic 1-minute bars")
    p.add_argument("--symbols", type=int, default=20)
    p.add_argument("--start", required=True, help="YYYY-MM-DD or ISO timestamp (UTC)")
    p.add_argument("--end", required=True, help="exclusive")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(run=cmd_generate_bars)

    p = sub.add_parser("backfill", parents=[common], help="compute and store features for [start, end)")
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    p.add_argument("--features", help="comma-separated feature view names (default: all)")
    p.add_argument("--timeframes", default="1m,5m,1h")
    p.add_argument("--chunk", default="1d", choices=["1d", "7d", "30d"], help="chunk size (default 1d)")
    p.add_argument("--force", action="store_true", help="recompute chunks the ledger marks as done")
    p.set_defaults(run=cmd_backfill)

    p = sub.add_parser("ingest", parents=[common], help="store a Parquet/CSV/Delta file of features computed elsewhere")
    p.add_argument("--view", required=True)
    p.add_argument("--keys", required=True, help="K1[,K2...]")
    p.add_argument("--timestamp-column", required=True)
    p.add_argument("--created-column")
    p.add_argument("--ttl", type=int, help="seconds")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--allow-nan", action="store_true")
    p.add_argument("--input", required=True)
    p.set_defaults(run=cmd_ingest)

    p = sub.add_parser("training-set", parents=[common], help="point-in-time training set: entities -> Parquet")
    p.add_argument("--entities", required=True, help="Parquet or CSV with the join keys and event_timestamp")
    p.add_argument("--features", required=True, help="VIEW:FEATURE[,VIEW:FEATURE...]")
    p.add_argument("--output", required=True, help="Parquet output path")
    p.add_argument("--full-feature-names", action="store_true", help="name columns <view>_v<version>__<feature>")
    p.add_argument("--known-at", action="store_true", help="only rows created at or before each entity time")
    p.set_defaults(run=cmd_training_set)

    p = sub.add_parser("materialize", parents=[common], help="latest row per entity in (start, end] -> online store")
    p.add_argument("--start", required=True, help="exclusive; YYYY-MM-DD or ISO timestamp (UTC)")
    p.add_argument("--end", required=True, help="inclusive")
    p.add_argument("--views", help="comma-separated view names or Feast names (default: every stored view)")
    p.set_defaults(run=cmd_materialize)

    p = sub.add_parser("online", parents=[common], help="online feature values as JSON (no Spark)")
    p.add_argument("--entity", required=True, action="append", help="KEY=VALUE[,KEY=VALUE...]; repeatable")
    p.add_argument("--features", help="VIEW:FEATURE[,...] (default: every view keyed by the given keys)")
    p.set_defaults(run=cmd_online)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # PySpark configures the root logger on import, so this package's logger gets its own handler
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace, Config], object] = args.run
    try:
        result = run(args, load_config(args.conf))
    except SparkFeaturesError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
