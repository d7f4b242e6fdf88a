#!/usr/bin/env bash
# vLLM 0.8.3 (the version the Llama 4 article ran) on the lent GPU machine: stage its torch 2.6 / CUDA 12.4 stack,
# then measure the memory terms of its KV-cache sizing (issue 23; llmstudy.chapters.context_limits CALLS v1, v2).
#
# The 49 wheels of envs/vllm-0.8.3-device.txt (3.44 GB) are installed HERE, on the CPU machine, into one folder
# (pip --target, cp312 tags; vllm's FA2 kernel dropped: Hopper runs FA3) and shipped as a zstd-compressed tar
# (2.20 GB: 37 chunks of 58 MiB instead of 57 of the wheels; the image has no zstd binary, so the zstandard wheel
# rides in the last chunk). Records h200x1-v083-a..e came from `run h200x1-v083-a v1 535`, `run ... -b v2 540` (its
# last configuration did not fit the deadline), `-c v083-scout12-text-bf16 280`, `-d v3 200`, `-e v4 230`. Usage:
#   HERE:   bash scripts/device_vllm083.sh prepare                   -> .stage1 .. .stageN (ignored folders)
#   DEVICE (run tool, back to back; the machine forgets /root/stash after ~30 s idle):
#     carry [".stageK", ...]: bash scripts/device_vllm083.sh stash  (any number of .stage folders per call, <= 64 MiB)
#     then: bash scripts/device_vllm083.sh install && bash scripts/device_vllm083.sh run RUN_ID CONFIGS [DEADLINE_S]
# `run` calls scripts/device_context_limits.sh with vLLM 0.8.3 first on PYTHONPATH (every 0.8.3 server runs with the
# memory probe, llmstudy.serving.vllm_probe); it writes $OUT/RUN_ID.tar.gz (data/runs/context_limits/RUN_ID).
set -uo pipefail
STASH=${STASH:-/root/stash}
SITE=${SITE:-/tmp/site}
WORK=${V083_WORK:-/tmp/v083b}
WHEELS=${V083_WHEELS:-/tmp/v083/all}
CHUNK=${CHUNK:-58M}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

prepare() {  # CPU machine: wheels -> one site folder -> site.tar.zst -> .stageN/part.NN
  set -e
  local plat=() p
  for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux_2_31 manylinux_2_34 manylinux_2_35 manylinux1; do
    plat+=(--platform "${p}_x86_64")
  done
  mkdir -p "$WORK" && cd "$WORK"
  if [ ! -f site.tar.zst ]; then
    [ -d "$WHEELS" ] || python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
        -d "$WHEELS" -r <(grep -v '^#' "$here/envs/vllm-0.8.3-device.txt" | grep .)
    rm -rf site && python3 -m pip install -q --no-deps --no-index --no-compile --target site --python-version 3.12 --implementation cp \
        --only-binary=:all: "${plat[@]}" "$WHEELS"/*.whl
    rm -f site/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so  # Ampere kernels; Hopper uses FA3 (the import is guarded)
    tar -C site -cf - . | zstd -T0 -9 --long=27 -q -o site.tar.zst
  fi
  [ -d zw ] || python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" -d zw zstandard
  rm -f part.* && split -b "$CHUNK" -d -a 2 site.tar.zst part. && sha256sum site.tar.zst > site.tar.zst.sha256
  rm -rf "$here"/.stage[0-9]*
  local i=0
  for p in part.*; do
    i=$((i+1)); mkdir -p "$here/.stage$i"; cp "$p" "$here/.stage$i/"
    grep -qx "/.stage$i/" "$here/.git/info/exclude" 2>/dev/null || echo "/.stage$i/" >> "$here/.git/info/exclude"
  done
  cp site.tar.zst.sha256 zw/*.whl "$here/.stage$i/"  # the last chunk is the short one
  echo "site.tar.zst $(du -h site.tar.zst | cut -f1) in $i chunks (.stage1 .. .stage$i)"
}

stash() {  # device: keep every carried chunk in /root/stash
  mkdir -p "$STASH"
  local found=0 d
  for d in "$here"/.stage[0-9]*; do [ -d "$d" ] && cp -f "$d"/* "$STASH"/ && found=1; done
  [ $found = 1 ] || { echo "no .stageN folder carried in this call"; exit 1; }
  echo "stash: $(ls "$STASH" | grep -c '^part\.') chunks, $(du -sh "$STASH" | cut -f1)"
}

install() {  # device: chunks -> /tmp/site (zstd if the image has it, else the staged zstandard wheel)
  set -e
  if [ -f "$SITE/.v083-installed" ]; then echo "already installed"; return 0; fi
  local t0=$SECONDS
  ( cd "$STASH" && cat part.* | sha256sum | awk '{print $1"  site.tar.zst"}' > /tmp/got.sha256 && diff -q /tmp/got.sha256 site.tar.zst.sha256 )
  rm -rf "$SITE" && mkdir -p "$SITE"
  if command -v zstd >/dev/null; then
    cat "$STASH"/part.* | zstd -d --long=27 -q -c | tar -x -C "$SITE"
  else
    mkdir -p /tmp/zstd-py && python3 -m pip install -q --no-index --no-deps --target /tmp/zstd-py "$STASH"/zstandard-*.whl
    cat "$STASH"/part.* | PYTHONPATH=/tmp/zstd-py python3 -c "import sys, zstandard; zstandard.ZstdDecompressor(max_window_size=2**27).copy_stream(sys.stdin.buffer, sys.stdout.buffer)" \
      | tar -x -C "$SITE"
  fi
  touch "$SITE/.v083-installed"
  echo "installed into $SITE in $((SECONDS - t0)) s: $(du -sh "$SITE" | cut -f1)"
  PYTHONPATH="$SITE" python3 - <<'EOF'
import torch, numpy, numba, transformers, vllm
print("torch", torch.__version__, "cuda", torch.version.cuda, "numpy", numpy.__version__, "numba", numba.__version__,
      "transformers", transformers.__version__, "vllm", vllm.__version__)
torch.zeros(1).cuda()
libs = sorted({l.split()[-1] for l in open("/proc/self/maps") if any(s in l for s in ("libcudnn.so", "libnccl.so", "libcublas.so", "libcudart.so"))})
print("\n".join(libs))
EOF
}

run() {  # device: RUN_ID CONFIGS [DEADLINE_S] -> scripts/device_context_limits.sh with vLLM 0.8.3 first on PYTHONPATH
  # (it prepends src/; model folders come from the carried .v083-models via STAGE_ADD; 0.8.3 servers get the probe
  # from llmstudy.chapters.context_limits.run itself)
  export PYTHONPATH="$SITE" STAGE_ADD="$here/.v083-models"
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
  mkdir -p "$STAGE_ADD"
  cd "$here" && bash scripts/device_context_limits.sh "$@"
}

cmd=${1:-}; shift || true
case "$cmd" in
  prepare|stash|install|run) "$cmd" "$@" ;;
  *) sed -n '2,13p' "${BASH_SOURCE[0]}"; exit 2 ;;
esac
