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

bench: setup
	.venv/bin/python bench/store_write.py

clean:
	rm -rf data build .pytest_cache .mypy_cache .ruff_cache
