#!/usr/bin/env bash
# Submit jobs/JOB.py with the right jars, conf and Python, from any directory.
#   ./spark-submit.sh [--master M] [--deploy-mode D] [--conf KEY=VALUE ...] [--conf FILE.yaml] [--dry-run] JOB [ARGS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${SPARK_FEATURES_PYTHON:-$ROOT/.venv/bin/python}"
if [ ! -x "$PY" ]; then
  echo "error: no Python at $PY; run 'make setup' (or set SPARK_FEATURES_PYTHON)" >&2
  exit 2
fi
exec "$PY" -m spark_features.submit "$@"
