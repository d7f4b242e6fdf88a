#!/usr/bin/env bash
# The LoRA-vs-QLoRA chapter on a lent GPU: one call per part, each within ~9 minutes on an H100 (see
# scripts/device_lora_vs_qlora.stage for what must be staged first). Usage on the device, from the repo root:
#   LLMSTUDY_GIT_SHA=<sha> bash scripts/device_lora_vs_qlora.sh PART RUN_ID [DEADLINE_S]
# PART
#   7b       Llama-2-7B architecture, random weights, the real dataset through the real Llama-2 tokenizer:
#            lora and qlora with the article's recipe (6 optimizer steps: 1 warm-up + 5 measured), then
#            lora-fast and qlora-fast on the same 6 steps                                   (~7.5 min)
#   small-a  Gemma-3-270m, all 3 epochs: base (answers, eval loss), lora-fast, qlora-fast, then lora with
#            the article's recipe                                                            (~7.5 min)
#   small-b  Gemma-3-270m, all 3 epochs: qlora with the article's recipe                     (~7 min)
#   small    everything of small-a and small-b in one call, the two article-recipe runs side by side on the
#            GPU (each its own process; their step times are then measured while sharing)  (~9-10 min: tight)
#   7b:V,..  small:V,..   only the listed variants (base lora qlora lora-fast qlora-fast), e.g. to redo one
#   small-article-lora   Gemma-3-270m, all 3 epochs (48 steps), lora with the article's recipe, RESUMABLE: ~2 calls
#   small-article-qlora  the same for qlora                                                   RESUMABLE: ~2 calls
#            (~11-13.5 s per step on the H100: ~35 steps in a first call, the rest + evaluation + answers in a second)
#   small-article        both of the above side by side on the GPU (each its own process), RESUMABLE: ~2 calls in all
#            instead of ~4. Their step times are measured while sharing (the record says so: concurrent_with); the
#            chapter takes the article recipe's s/step from a run that had the GPU alone (h100-small-a / -b).
# Writes $OUT/RUN_ID.tar.gz (the run record), $OUT/log-RUN_ID-HHMMSS.txt (each call) and $OUT/nvidia-smi-RUN_ID.txt. A variant that
# cannot finish before DEADLINE_S (default 540 s) is recorded as a timeout with the steps it completed.
# A RESUMABLE part instead stops training 60 s before DEADLINE_S with a Trainer checkpoint (adapter, optimizer,
# scheduler, RNG, trainer state) in /root/runs/lora_vs_qlora/.work-RUN_ID (kept while the machine stays warm) and
# EXITS 3 with "INCOMPLETE ... call again": repeat the same command (same PART and RUN_ID) until it exits 0; only then
# is the record tarred to $OUT. Exit 0 = record written; 3 = call again; anything else = failed.
# If the machine went cold between calls, the checkpoints are gone: the next call starts the run from step 0.
# DRY_RUN=1 rehearses a part on a CPU (tiny-llama-32k, the test fixture, one epoch, adamw_torch; QLoRA refused).
set -uo pipefail
PART=${1:?part: 7b | small-a | small-b | small | small-article-lora | small-article-qlora | small-article}; RUN_ID=${2:?run id}; DEADLINE=${3:-540}
RUNS=${LLMSTUDY_DEVICE_RUNS:-/root/runs}  # outside $OUT: resumable work survives between calls (DRY_RUN: set it)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" LLMSTUDY_ROOT="$PWD" LLMSTUDY_CACHE=/tmp PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# staged folders (stage.sh --add) land in /tmp/stage/add; a carried .cache works as well
CACHE=/tmp/llmstudy-model-cache; mkdir -p "$CACHE/models"
for d in llama2-tokenizer models/gemma-3-270m; do
  src=/tmp/stage/add/$(basename "$d"); [ -d "$src" ] || src="$PWD/.cache/$d"
  [ -d "$src" ] && ln -sfn "$src" "$CACHE/$d"
done
export LLMSTUDY_MODEL_CACHE=$CACHE
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi-$RUN_ID.txt"; fi
case "$PART" in
  7b)      ARGS=(llama-2-7b --steps 6 --variants lora qlora lora-fast qlora-fast) ;;
  small-a) ARGS=(gemma-3-270m --variants base lora-fast qlora-fast lora) ;;
  small-b) ARGS=(gemma-3-270m --variants qlora) ;;
  small)   ARGS=(gemma-3-270m --variants base lora-fast qlora-fast lora qlora --parallel lora qlora) ;;
  7b:*)    ARGS=(llama-2-7b --steps 6 --variants ${PART#7b:}) ;;        # e.g. 7b:qlora,qlora-fast (a rerun)
  small:*) ARGS=(gemma-3-270m --variants ${PART#small:}) ;;            # e.g. small:lora
  small-article-lora)  ARGS=(gemma-3-270m --variants lora --resumable) ;;
  small-article-qlora) ARGS=(gemma-3-270m --variants qlora --resumable) ;;
  small-article)       ARGS=(gemma-3-270m --variants lora qlora --parallel lora qlora --resumable) ;;
  *) echo "unknown part $PART"; exit 2 ;;
esac
if [ "${DRY_RUN:-0}" = 1 ]; then
  ARGS=(tiny-llama-32k "${ARGS[@]:1}" --optimizer adamw_torch --epochs 1 --steps-cap 2 --dataset tests/fixtures/persona_mini.json)
fi
export RUNS; mkdir -p "$RUNS"; STAMP=$(date -u +%H%M%S)
python3 - "$RUN_ID" "$DEADLINE" "${ARGS[@]}" <<'PY' 2>&1 | tee "$OUT/log-$RUN_ID-$STAMP.txt"
import argparse, os, sys
import pandas as pd
from llmstudy.chapters import lora_vs_qlora as L

run_id, deadline = sys.argv[1], float(sys.argv[2])
p = argparse.ArgumentParser()
p.add_argument("model"); p.add_argument("--steps", type=int, default=0); p.add_argument("--steps-cap", type=int, default=0)
p.add_argument("--variants", nargs="+"); p.add_argument("--parallel", nargs="*", default=[])
p.add_argument("--optimizer", default="paged_adamw_8bit"); p.add_argument("--epochs", type=int, default=3); p.add_argument("--dataset", default=None)
p.add_argument("--resumable", action="store_true")
a = p.parse_args(sys.argv[3:])
a.variants = [v for x in a.variants for v in x.split(",") if v]
steps = min(a.steps, a.steps_cap) if a.steps and a.steps_cap else a.steps
try:
    path = L.run_experiment(model=a.model, variants=a.variants, parallel=a.parallel, steps=steps, epochs=a.epochs, optimizer=a.optimizer, dataset=a.dataset, run_id=run_id, root=os.environ["RUNS"], deadline_s=deadline, timeout_s=3600, resumable=a.resumable)
except L.ResumeNeeded as e:
    print(f"INCOMPLETE: {e}")
    sys.exit(3)
pd.set_option("display.width", 250); pd.set_option("display.max_columns", 40)
import torch
df = L.add_speed(pd.read_csv(path / "results.csv").assign(gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"))
print(df[["variant", "outcome", "steps_run", "median_step_s", "samples_per_s", "epoch_s", "mfu", "peak_allocated_GiB", "predicted_peak_GiB", "nvml_peak_process_GiB", "eval_loss", "error"]].to_string())
PY
rc=${PIPESTATUS[0]}
if [ "$rc" = 3 ]; then
  echo "INCOMPLETE (exit 3): call again with the same arguments to resume: bash scripts/device_lora_vs_qlora.sh $PART $RUN_ID $DEADLINE"
  ls "$RUNS/lora_vs_qlora/.work-$RUN_ID"/trainer-*/ 2>/dev/null
  exit 3
fi
[ "$rc" = 0 ] || { echo "FAILED (exit $rc)"; exit "$rc"; }
tar -czf "$OUT/$RUN_ID.tar.gz" -C "$RUNS/lora_vs_qlora" "$RUN_ID" && rm -rf "$RUNS/lora_vs_qlora/$RUN_ID"
ls -la "$OUT"
