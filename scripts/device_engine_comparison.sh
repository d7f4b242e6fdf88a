#!/usr/bin/env bash
# The engine-comparison chapter on a lent GPU (notebooks/engine_comparison.ipynb). Usage on the device, from the repo
# root, after `source /root/stash/stage.sh env` (vLLM 0.25.0 staged; see "Staging" below):
#   LLMSTUDY_GIT_SHA=<sha> bash scripts/device_engine_comparison.sh RUN_ID PART
# PART
#   gptoss-vllm    gpt-oss-20b (MXFP4 experts, random weights) on vLLM, 512 in / 256 out, c = 1, 2, 4, ..., 256, one
#                  server (--max-num-seqs 256, --max-model-len 8192). ~6-7 min on an H100: ~4 min start (graph
#                  capture for 256 sizes), ~2 min of points. Needs only the vLLM wheels. MOE_BACKEND=marlin: vLLM's
#                  Marlin MXFP4 experts instead of its choice (TRITON on Hopper), if TRITON fails (use a new RUN_ID).
#   second-engine  Llama-2-7B GPTQ layout (random weights), 512 / 256, batch cap 16, c = 1..64 (400 requests at 16):
#                  SGLang 0.5.17, then vLLM, ONE SERVER PER CALL: call 1 runs SGLang and exits 3, call 2 (same
#                  RUN_ID, machine still warm) runs vLLM, exits 0 and tars the record. ~4-5 min per call.
#                  SECOND_ENGINE=transformers: HF transformers (continuous batching) instead, bf16 llama-2-7b on both.
#   MODEL=<name under data/models>: the part for another model (a fork), same schedule and settings.
#   cpu-smoke      the pipeline on a CPU (transformers vs the CPU vLLM, tiny model); ~2-3 min; set LLMSTUDY_VLLM_PYTHON.
# Exit 3 = this call's budget (--budget-s) or server count (--max-servers 1) is spent: call again with the same RUN_ID.
# Records live in /root/runs (kept between calls while the machine stays warm). $OUT gets at most 5 files:
# RUN_ID.tar.gz when complete (else work-RUN_ID-STAMP.tar.gz: finished points and logs), console-RUN_ID-STAMP.txt,
# nvidia-smi.txt, sglang-install.txt. Unpack RUN_ID.tar.gz into data/runs/engine_comparison/ and commit.
#
# On the CPU machine, before staging (not on the device):
#   bash scripts/device_engine_comparison.sh - fetch-wheels     # envs/sglang-gpu.txt -> .cache/sglang-wheels (459 MB, ~1 min)
# Staging (the recipe in ../shared/notes/device.md):
#   gptoss-vllm:   bash ../shared/device/stage.sh prepare ../shared/device/wheels/vllm-0.25.0.txt            (3 chunks)
#   second-engine: bash ../shared/device/stage.sh prepare ../shared/device/wheels/vllm-0.25.0.txt --add .cache/sglang-wheels
#                  (~630 MB, ~11 chunks; SGLang's wheels arrive as /tmp/stage/add/sglang-wheels and this script installs
#                  them into their own folder, /tmp/site-sglang, which only the SGLang server sees)
set -uo pipefail
RUN_ID=${1:?run id (or - for fetch-wheels)}; PART=${2:?part: gptoss-vllm | second-engine | cpu-smoke | fetch-wheels}

if [ "$PART" = fetch-wheels ]; then   # CPU machine: SGLang and the packages it needs beyond the image and vLLM's list
  set -e
  DEST=${DEST:-.cache/sglang-wheels}; mkdir -p "$DEST"
  PLAT=(); for p in manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do PLAT+=(--platform "$p"); done
  grep -v '^#' envs/sglang-gpu.txt | grep . > "$DEST/requirements.txt"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" -d "$DEST" -r "$DEST/requirements.txt"
  echo "$(ls "$DEST"/*.whl | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST"
  exit 0
fi

export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" LLMSTUDY_ROOT="$PWD" LLMSTUDY_RUNS=${LLMSTUDY_RUNS:-/root/runs} PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
STAMP=$(date -u +%H%M%S)
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.txt"
SECOND=${SECOND_ENGINE:-sglang}
case "$PART" in
  gptoss-vllm)   ARGS=(--budget-s "${BUDGET_S:-420}" ${MOE_BACKEND:+--moe-backend "$MOE_BACKEND"}) ;;
  second-engine) ARGS=(--second-engine "$SECOND" --budget-s "${BUDGET_S:-400}" --max-servers 1) ;;
  cpu-smoke)     ARGS=(--start-timeout-s 400) ;;
  *) echo "unknown part $PART"; exit 2 ;;
esac

if [ "$PART" = second-engine ] && [ "$SECOND" = sglang ]; then
  SITE_SGL=${LLMSTUDY_SGLANG_SITE:-/tmp/site-sglang}
  if [ ! -f "$SITE_SGL/.installed" ]; then
    W=${SGLANG_WHEELS:-/tmp/stage/add/sglang-wheels}; [ -d "$W" ] || W="$PWD/.cache/sglang-wheels"
    if ls "$W"/sglang-0.5.17-*.whl >/dev/null 2>&1; then
      python3 -m pip install --no-index --no-deps --no-compile --no-cache-dir --target "$SITE_SGL" "$W"/*.whl > "$OUT/sglang-install.txt" 2>&1 \
        && touch "$SITE_SGL/.installed"
      tail -3 "$OUT/sglang-install.txt"
    else
      echo "no SGLang wheels in $W: the SGLang server will fail to start (recorded as such); stage .cache/sglang-wheels" | tee "$OUT/sglang-install.txt"
    fi
  fi
  export LLMSTUDY_SGLANG_SITE="$SITE_SGL"
fi

CONS="$LLMSTUDY_RUNS/.consoles"; mkdir -p "$CONS"   # every call's console, kept for the record
python3 -m llmstudy.cli engines run "$PART" --run-id "$RUN_ID" ${MODEL:+--model "$MODEL"} "${ARGS[@]}" > "$CONS/console-$RUN_ID-$STAMP.txt" 2>&1
rc=$?
cp "$CONS/console-$RUN_ID-$STAMP.txt" "$OUT/"
tail -c 3000 "$CONS/console-$RUN_ID-$STAMP.txt"
EXP=$LLMSTUDY_RUNS/engine_comparison
if [ $rc -eq 0 ]; then
  cp "$CONS"/console-"$RUN_ID"-*.txt "$EXP/$RUN_ID/logs/" 2>/dev/null
  tar -czf "$OUT/$RUN_ID.tar.gz" -C "$EXP" "$RUN_ID"
  python3 -m llmstudy.cli engines check --run-ids "$RUN_ID" | tail -20
else
  W="$EXP/.work-$RUN_ID"
  [ -d "$W" ] && tar -czf "$OUT/work-$RUN_ID-$STAMP.tar.gz" -C "$W" --exclude=model . 2>/dev/null
  echo "points done: $(ls "$W/points" 2>/dev/null | wc -l)"
fi
exit $rc
