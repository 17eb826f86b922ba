# Entry points for humans and CI. Every target that runs project code first runs
# scripts/setup.sh, which is idempotent and quick when everything is installed.
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: setup test lint bench demo package

setup:
	bash scripts/setup.sh

# Everything CI runs, the example end-to-end tests included (ECSSD_TEST_PYTHON_IMAGE=1: they
# build the offline Python base image once, about 40 s, then reuse it).
# pytest exits 5 when it collected nothing: say so, and keep it a failure.
test: setup
	@rc=0; ECSSD_TEST_PYTHON_IMAGE=1 $(PYTHON) -m pytest -q -ra $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

lint:
	ruff check . && mypy

bench: setup
	$(PYTHON) -m benchmarks

demo: setup
	$(PYTHON) -m examples.demo

package:
	$(PYTHON) scripts/package_lambda.py
