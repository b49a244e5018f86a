# waveforms: `make demo` runs the pipeline end to end; `make test` runs the tests.
PY := .venv/bin/python
export SPARK_LOCAL_IP := 127.0.0.1
export PYSPARK_PYTHON := $(CURDIR)/.venv/bin/python
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	$(PY) -m pytest -q test

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf demo-out .pytest_cache
