"""spark-submit entry for `spark-features materialize`: argument parsing and the session live in the CLI."""

import sys

from spark_features.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["materialize", *sys.argv[1:]]))
