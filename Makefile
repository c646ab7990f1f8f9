# diffattr: every target sets up what it needs (a local .venv with the package and its tools).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench install system-deps clean

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

# 2 workers; an xdist_group's tests (and its module fixture) stay on one worker, and the order of
# tests/conftest.py (longest first) is kept rather than xdist's largest-group-first.
test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -n $(CORES) --dist loadgroup --no-loadscope-reorder --durations=15

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

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/python benchmarks/featurize.py

lint: $(STAMP)
	$(BIN)/ruff check src scripts tests benchmarks
	$(BIN)/ruff format --check src scripts tests benchmarks
	$(BIN)/snakefmt --check workflow/Snakefile rules
	$(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake
