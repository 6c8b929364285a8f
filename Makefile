# depth2img — set-up and main commands. Everything starts from nothing: `make test` or `make demo`
# on a fresh machine creates .venv, installs torch (TORCH_SPEC), then the package, then runs.
PYTHON ?= python3
VENV ?= .venv
# On this project's CPU machines torch==2.13.0 resolves to a local CPU wheel; on a GPU cluster
# set e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_ARGS ?= -m "not gpu"
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: help install test test-fast test-tools demo lint format cluster-start cluster-stop bench clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch-installed: | $(PY)
	$(PIP) install --upgrade pip >/dev/null
	$(PIP) install $(TORCH_SPEC)
	touch $@

$(VENV)/.package-installed: pyproject.toml $(VENV)/.torch-installed
	$(PIP) install -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.package-installed  ## create .venv and install torch + depth2img (skips what is there)

# make test keeps going when no cluster can be started here (the SLURM tests then skip with the
# reason); set DEPTH2IMG_SLURM_OPTIONAL=0 to make a missing cluster an error.
cluster-start:  ## start the local one-node SLURM test cluster (installs slurm-wlm/munge if missing)
	DEPTH2IMG_SLURM_OPTIONAL=$${DEPTH2IMG_SLURM_OPTIONAL:-1} bash slurm/local_cluster.sh start

cluster-stop:  ## stop the local SLURM test cluster
	bash slurm/local_cluster.sh stop

# The serving tests also need curl, Node >= 18 and Chromium + chromedriver (OS packages); same
# policy: where they cannot be installed those tests skip with the reason
# (DEPTH2IMG_TEST_TOOLS_OPTIONAL=0 makes that an error).
test-tools:  ## install curl, nodejs, chromium, chromium-driver if missing (serving tests)
	DEPTH2IMG_TEST_TOOLS_OPTIONAL=$${DEPTH2IMG_TEST_TOOLS_OPTIONAL:-1} bash scripts/ensure_test_tools.sh

test: install cluster-start test-tools  ## run the whole test suite (offline, CPU)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install  ## unit tests only, no cluster
	$(PY) -m pytest tests/unit -m "not slow and not gpu and not slurm"

demo: install  ## the main job on the embedded default: aerial fine-tune, eval, generate, report
	$(PY) -m depth2img.cli.demo

lint: install  ## ruff lint + format check
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

format: install
	$(VENV)/bin/ruff format src tests scripts
	$(VENV)/bin/ruff check --fix src tests scripts

bench: install  ## CPU benchmarks (write JSON under outputs/bench/)
	$(PY) scripts/bench_data.py
	$(PY) scripts/bench_train.py
	$(PY) scripts/bench_generate.py

clean:
	rm -rf outputs .pytest_cache .ruff_cache
