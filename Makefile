# waveforms: `make demo` runs the pipeline end to end; `make test` runs every test,
# `make test-fast` the developer loop (tests not marked slow).
#
#   make setup      .venv with the package (editable) and its pinned dependencies; apt packages it lacks
#   make demo       scrape a local FMA-format mirror, transform on Spark, train, generate (demo-out/)
#   make test       the whole suite, slow tests included (clusters, S3 on moto, SIGKILL races, big data), in three
#                   pytest-xdist workers (a test file stays on one worker, with its module's fixtures)
#   make test-fast  pytest -m "not slow": the developer loop, a few minutes on 2 cores
#   make bench      the benchmarks in bench/ (tables, not tests)
#   make docs       the reference site from docs/ into build/site (MkDocs, --strict: broken links fail)
#   make clean      remove demo-out/ and pytest's cache
PY := .venv/bin/python
export SPARK_LOCAL_IP := 127.0.0.1
export PYSPARK_PYTHON := $(CURDIR)/.venv/bin/python
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo test test-fast bench docs clean

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	$(PY) -m pytest -q -n 3 --dist loadfile --durations=25 test

test-fast: setup
	$(PY) -m pytest -q -m "not slow" test

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

docs: setup
	.venv/bin/mkdocs build --strict --quiet

clean:
	rm -rf demo-out .pytest_cache build/site
