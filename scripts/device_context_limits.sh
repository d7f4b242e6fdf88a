#!/usr/bin/env bash
# Measure vLLM 0.25.0's KV-cache capacity (the context-limits chapter): Llama 4 on 4 or 8 GPUs (calls a-e),
# seven other families on one GPU (call g). One vLLM server per configuration (dummy weights, synthetic tokenizer,
# TP = number of visible GPUs); each start
# failure (OOM, refusal, timeout) is recorded as that configuration's outcome. Usage on the device:
#   bash scripts/device_context_limits.sh RUN_ID CONFIGS [DEADLINE_S]
# CONFIGS: comma-separated configuration names or device calls a-g (llmstudy.chapters.context_limits.CALLS; each fits one
# 10-minute call). Expects vLLM 0.25.0 staged (stage.sh install + env). Model folders (config + synthetic tokenizer) are
# built on the device, or reused from $STAGE_ADD/llmstudy-context-limits/ when staged with `stage.sh prepare ... --add`.
# Writes $OUT/RUN_ID.tar.gz (the run record data/runs/context_limits/RUN_ID) plus the console log and nvidia-smi's
# view of the GPUs. The one-GPU records h200x1-g and -g2 came from `... h200x1-g g 530` and
# `... h200x1-g2 tp1-deepseek-v2-lite,tp1-mixtral-8x7b 330` (the first call's deadline left those two unstarted).
set -uo pipefail
RUN_ID=$1; CONFIGS=$2; DEADLINE=${3:-540}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" LLMSTUDY_ROOT="$PWD" LLMSTUDY_CACHE="${STAGE_ADD:-/tmp}" PYTHONUNBUFFERED=1
# Never NVLink multicast on the shared host (also set in every server's environment by llmstudy.chapters.context_limits).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 VLLM_USE_FLASHINFER_SAMPLER=0
nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version --format=csv | tee "$OUT/nvidia-smi-$RUN_ID.txt"
# The record is written under /root/runs, which outlives the call while the machine stays warm: if the files under
# $OUT do not come back, a follow-up call can still tar it (tar -czf $OUT/x.tar.gz -C /root/runs/context_limits RUN_ID).
python3 -m llmstudy.cli capacity --run ${CONFIGS//,/ } --run-id "$RUN_ID" --root /root/runs --deadline-s "$DEADLINE" 2>&1 \
  | grep -v "DEBUG" | tee "$OUT/log-$RUN_ID.txt"
cp "$OUT/log-$RUN_ID.txt" "/root/runs/context_limits/$RUN_ID/logs/console-$RUN_ID.txt"; cp "$OUT/nvidia-smi-$RUN_ID.txt" "/root/runs/context_limits/$RUN_ID/logs/"
tar -czf "$OUT/$RUN_ID.tar.gz" -C /root/runs/context_limits "$RUN_ID"
ls -la "$OUT"
