# The two commands a new user runs: `make quickstart` and `make test`.
# Each creates .venv on first use and reuses it after.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: quickstart test test-cluster bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

quickstart: $(VENV)/.installed
	$(PY) -m jobs.sweep search_spaces/quickstart.yaml
	$(PY) -m analysis.report results/quickstart

# The report test opens the report in headless Chromium (Debian's package) with no network.
test: $(VENV)/.installed
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium could not be installed: the report's browser test will be skipped"
	$(PY) -m pytest -q

# The cluster path: a real two-node Ray cluster on this host (127.0.0.1 only) and the quickstart
# submitted with `ray job submit --runtime-env jobs/runtime_env.yaml --working-dir .` (minutes).
test-cluster: $(VENV)/.installed
	$(PY) -m pytest -q tests/test_cluster_job.py

bench: $(VENV)/.installed
	$(PY) benchmarks/attacks.py
	$(PY) benchmarks/mc_samples.py

clean:
	rm -rf results report .pytest_cache
