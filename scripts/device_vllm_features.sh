#!/usr/bin/env bash
# vLLM feature ablations on a lent GPU (vLLM 0.25.0 staged and installed; see the "reproduce" page). On the device,
# from the repository root:
#   LLMSTUDY_GIT_SHA=<sha> bash scripts/device_vllm_features.sh RUN_ID GROUP [BUDGET_S]
# MODEL=<name under data/models> (optional): the 7B arms for another model (a fork).
# GROUP: core | quant | kernels | spec, or arm names (comma-separated); `llmstudy features plan GROUP` lists the
# points and a time estimate. One GROUP = one run record (its baseline started first and last). BUDGET_S (default
# 500; pass 470 in a call that also installs the staged wheels): no server is started whose estimated work would end
# after it, and no point is begun after it; then the call exits 3 and the same command resumes in the next call
# (records stay in /root/runs while the machine is warm). When the record is complete it is tarred to
# $OUT/RUN_ID.tar.gz (with this run's console logs in logs/); otherwise the finished points so far go to
# $OUT/work-RUN_ID-STAMP.tar.gz. Every call writes $OUT/console-RUN_ID-STAMP.txt and nvidia-smi.txt.
# The spec group serves the real gemma-3-270m and its `ngram` arm imports numba (which refuses the image's NumPy 2.5;
# the list stages NumPy 2.4.6 with it): stage them with
# `stage.sh prepare .../vllm-0.25.0.txt envs/device-spec-extras.txt --add .cache/models/gemma-3-270m`
# (the model lands in /tmp/stage/add/gemma-3-270m) or carry .cache/models/gemma-3-270m.
set -uo pipefail
RUN_ID=${1:?run id}; GROUP=${2:?group: core | quant | kernels | spec | arm,arm,...}; BUDGET=${3:-500}
RUNS=${RUNS:-/root/runs}  # kept between calls while the machine is warm
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" LLMSTUDY_ROOT="$PWD" LLMSTUDY_RUNS=$RUNS PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export VLLM_USE_FLASHINFER_SAMPLER=${VLLM_USE_FLASHINFER_SAMPLER:-0}  # flashinfer is not staged
CACHE=/tmp/llmstudy-model-cache; mkdir -p "$CACHE/models"
src=/tmp/stage/add/gemma-3-270m; [ -d "$src" ] || src="$PWD/.cache/models/gemma-3-270m"
[ -d "$src" ] && ln -sfn "$src" "$CACHE/models/gemma-3-270m"
export LLMSTUDY_MODEL_CACHE=$CACHE
EXP=vllm_features
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.txt" 2>&1
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
CONSOLES=$RUNS/.consoles/$RUN_ID; mkdir -p "$CONSOLES"
python3 -m llmstudy.cli features run "$GROUP" --run-id "$RUN_ID" --budget-s "$BUDGET" ${MODEL:+--model "$MODEL"} 2>&1 | tee "$CONSOLES/console-$RUN_ID-$STAMP.txt" | tail -c 3000
rc=${PIPESTATUS[0]}
cp "$CONSOLES/console-$RUN_ID-$STAMP.txt" "$OUT/"
if [ "$rc" -eq 0 ]; then
  mkdir -p "$RUNS/$EXP/$RUN_ID/logs" && cp "$CONSOLES"/console-*.txt "$RUNS/$EXP/$RUN_ID/logs/"
  tar -czf "$OUT/$RUN_ID.tar.gz" -C "$RUNS/$EXP" "$RUN_ID"
else
  W="$RUNS/$EXP/.work-$RUN_ID"
  [ -d "$W" ] && tar -czf "$OUT/work-$RUN_ID-$STAMP.tar.gz" -C "$W" --exclude='model*' . 2>/dev/null
  echo "finished points so far: $(ls "$W/points" 2>/dev/null | wc -l)  (exit $rc; 3 = budget spent: run the same command again)"
fi
exit "$rc"
