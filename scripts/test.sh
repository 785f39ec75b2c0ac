#!/usr/bin/env bash
# Run the whole test suite (set up first). Extra arguments go to pytest.
# pytest's exit status 5 ("no tests collected") is a failure here.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh || exit $?
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null || exit 1
  else
    echo "error: redis-server is needed by the Redis tests: sudo apt-get install redis-server" >&2
    exit 1
  fi
fi
export PYSPARK_PYTHON="$ROOT/.venv/bin/python"
.venv/bin/python -m pytest "$@"
status=$?
if [ "$status" = 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
