#!/usr/bin/env bash
# Run the memory-accounting experiment on a lent GPU (see the "reproduce" page). Usage on the device:
#   bash scripts/device_memory_accounting.sh RUN_ID METHOD[,METHOD...] [STEPS] [SEQ_LEN] [GRAD_ACCUM] [GRAD_CKPT 1|0] [MICRO_BATCH]
# Expects the fine-tuning wheels installed (../shared/device/stage.sh) and writes $OUT/RUN_ID.tar.gz + a log.
set -uo pipefail
RUN_ID=$1; METHODS=$2; STEPS=${3:-3}; SEQ=${4:-100}; ACCUM=${5:-32}; CKPT=${6:-1}; MB=${7:-1}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" LLMSTUDY_ROOT="$PWD" LLMSTUDY_CACHE=/tmp PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi-$RUN_ID.txt"
python3 - "$RUN_ID" "$METHODS" "$STEPS" "$SEQ" "$ACCUM" "$CKPT" "$MB" <<'PY' 2>&1 | tee "$OUT/log-$RUN_ID.txt"
import sys, os
from llmstudy.training import memory as mm
run_id, methods, steps, seq, accum, ckpt = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1"
mb = int(sys.argv[7])
p = mm.run_experiment(model="llama-2-7b", methods=methods, steps=steps, seq_len=seq, grad_accum=accum, grad_ckpt=ckpt, micro_batch=mb, run_id=run_id, root=os.environ["OUT"] + "/runs", timeout_s=420)
import pandas as pd
pd.set_option("display.width", 250); pd.set_option("display.max_columns", 40)
df = pd.read_csv(p / "results.csv")
print(df[["setup", "outcome", "peak_allocated_GiB", "peak_reserved_GiB", "nvml_peak_process_GiB", "nvml_peak_device_delta_GiB", "weights_GiB", "gradients_GiB", "optimizer_GiB", "optimizer_paged_GiB", "median_step_s", "gradient_checkpointing_active", "error"]].to_string())
PY
tar -czf "$OUT/$RUN_ID.tar.gz" -C "$OUT/runs/memory_accounting" "$RUN_ID" && rm -rf "$OUT/runs"
