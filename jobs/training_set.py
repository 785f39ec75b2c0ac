"""spark-submit entry for `spark-features training-set`: argument parsing and the session live in the CLI."""

import sys

from spark_features.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["training-set", *sys.argv[1:]]))
