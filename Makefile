# The two commands a new user runs: `make quickstart` and `make test`.
# Each creates .venv on first use and reuses it after.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: quickstart test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

quickstart: $(VENV)/.installed
	$(PY) -m jobs.sweep search_spaces/quickstart.yaml

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/attacks.py

clean:
	rm -rf results report .pytest_cache
