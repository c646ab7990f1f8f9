# diffattr: every target sets up what it needs (a local .venv with the package and its tools).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
STAMP := $(VENV)/.installed
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: demo test test-presets reproduce docs rulegraph lint bench install system-deps clean

install: $(STAMP)

# torch and torchvision are pinned first to the pair on this machine's disk (torchvision from PyPI does
# not load beside other torch builds); elsewhere pip takes the same pair from PyPI.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --profile profiles/local
	$(BIN)/python -m diffattr.timings results/demo

# make test: every behaviour at tiny sizes (pyproject's addopts leave out the two markers below), in 2
# workers; an xdist_group's tests stay on one worker, and tests/conftest.py's order (longest first) is
# kept rather than xdist's largest-group-first. Every test's duration goes to test-durations.txt.
PYTEST := $(BIN)/python -m pytest -q -n $(CORES) --dist loadgroup --no-loadscope-reorder
test: $(STAMP) system-deps
	$(PYTEST) --durations=0 --durations-min=0 | tee test-durations.txt

# Every preset's toy run with its real, full-size architecture (before a change to a preset or a family).
test-presets: $(STAMP)
	$(PYTEST) -m presets --durations=0

# make demo, then its numbers asserted against tests/expected/demo/ (README's results).
reproduce: demo
	$(BIN)/python -m pytest -q -m reproduce --durations=0

# SLURM + munge for tests/test_slurm.py, which brings up a throwaway cluster (needs root), and chromium for
# tests/test_report.py; installed with apt only when missing and root, otherwise (or if apt fails) those
# tests are skipped.
SLURM_BINS := slurmctld slurmd slurmstepd sbatch srun squeue sinfo scontrol scancel munged munge
system-deps:
	@export PATH="$$PATH:/usr/local/sbin:/usr/sbin:/sbin"; missing=""; \
	for b in $(SLURM_BINS); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "warning: no$$missing and not root: the SLURM tests will be skipped"; exit 0; fi; \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge; } \
		|| echo "warning: could not install slurm-wlm and munge with apt-get: the SLURM tests will be skipped"
	@# Debian's chromium for tests/test_report.py (the report in a headless browser), the same way.
	@if command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "warning: no chromium and not root: the report's browser test will be skipped"; exit 0; fi; \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } \
		|| echo "warning: could not install chromium with apt-get: the report's browser test will be skipped"

# README's and docs/'s measured tables and docs/configuration.md, rendered from the files they come from.
docs: $(STAMP)
	$(BIN)/python docs/render.py

# docs/figures/rulegraph.svg: every rule of demo-all-methods (one job per model and shard, so no batch
# rules) and how they feed each other; needs Graphviz's dot (apt-get install graphviz).
RULEGRAPH_DIR := $(shell mktemp -u /tmp/diffattr-rulegraph.XXXXXX)
rulegraph: $(STAMP)
	mkdir -p $(RULEGRAPH_DIR) && cp config.yaml $(RULEGRAPH_DIR)/
	$(BIN)/snakemake -s workflow/Snakefile -d $(RULEGRAPH_DIR) --rulegraph --quiet all \
		--configfile experiments/demo-all-methods.yaml \
		--config "lds={'models_per_job': 1}" "featurize={'shards_per_job': 1}" "shapley={'models_per_job': 1}" \
		| dot -Tsvg > docs/figures/rulegraph.svg
	rm -rf $(RULEGRAPH_DIR)

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/python benchmarks/featurize.py
	$(BIN)/python benchmarks/query.py
	$(BIN)/python benchmarks/job_exit.py

lint: $(STAMP)
	$(BIN)/ruff check src scripts tests benchmarks docs
	$(BIN)/ruff format --check src scripts tests benchmarks docs
	$(BIN)/snakefmt --check workflow/Snakefile rules
	$(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake
