# The two quick-start commands are `make quickstart` and `make test`; everything else is optional.
.PHONY: setup quickstart test lint bench clean

setup:
	bash scripts/setup.sh

quickstart: setup
	./spark-submit.sh quickstart

test:
	bash scripts/test.sh

lint: setup
	.venv/bin/ruff check spark_features tests jobs bench feature_repo
	.venv/bin/mypy spark_features

# Every benchmark at reduced sizes (21 minutes on an idle 2-core machine; BENCHMARKS.md gives
# the full-size commands). Each one's output goes to bench/out/NAME.log and its RESULT line to
# bench/out/RESULTS.txt, printed at the end; a failing benchmark is recorded and fails the target.
# bench/results/ holds the recorded full-size figures and plots, which this target leaves alone.
# Entries are SCRIPT:FLAGS with FLAGS joined by "+".
BENCH_RUNS = store_write.py:--rows=1000000 training_set.py:--quick materialize.py:--quick \
	backfill_scale.py:--sizes=1m,5m+--driver-memory=4g+--json=bench/out/backfill_scale.json chaos.py:--quick
bench: SHELL := /bin/bash
bench: setup
	@set -o pipefail; mkdir -p bench/out && : > bench/out/RESULTS.txt; failed=0; \
	for run in $(BENCH_RUNS); do \
	  script=$${run%%:*}; flags=$${run#*:}; name=$${script%.py}; \
	  [ -f bench/$$script ] || continue; \
	  echo "== bench/$$script $${flags//+/ } (load $$(cut -d' ' -f1-3 /proc/loadavg))"; \
	  start=$$SECONDS; \
	  if .venv/bin/python bench/$$script $${flags//+/ } 2>&1 | tee bench/out/$$name.log; then \
	    line=$$(grep '^RESULT' bench/out/$$name.log | tail -1); line=$${line:-"RESULT $$name (none printed)"}; \
	  else line="RESULT $$name FAILED (see bench/out/$$name.log)"; failed=1; fi; \
	  echo "$$line  # $$((SECONDS - start))s" >> bench/out/RESULTS.txt; \
	done; \
	.venv/bin/python bench/plot.py --json bench/out/backfill_scale.json; \
	echo "== RESULT lines (bench/out/RESULTS.txt)"; cat bench/out/RESULTS.txt; exit $$failed

clean:
	rm -rf data build .pytest_cache .mypy_cache .ruff_cache
