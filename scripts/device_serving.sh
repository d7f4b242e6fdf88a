#!/usr/bin/env bash
# Run a serving sweep on a lent GPU (vLLM staged and installed; see the "reproduce" page). Usage on the device:
#   bash scripts/device_serving.sh RUN_ID KIND [llmstudy sweep options...]      KIND: batch-size | length | max-model-len | io
# (the options are the chapter's parameters: `llmstudy sweep KIND --help`; e.g. --max-num-seqs 4 16 --budget-s 500)
# Records live in /root/runs (kept between calls while the machine stays warm). Exit 3 = this call's budget is
# spent (--budget-s / --max-servers): call again with the same RUN_ID to resume. When the sweep is complete the
# record is tarred to $OUT/RUN_ID.tar.gz; every call also leaves its console log and the server logs in $OUT.
set -uo pipefail
RUN_ID=$1; KIND=$2; shift 2
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" LLMSTUDY_ROOT="$PWD" LLMSTUDY_RUNS=/root/runs PYTHONUNBUFFERED=1
case "$KIND" in batch-size) EXP=batch_size_sweep ;; *) EXP=length_sweep ;; esac
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.txt"
STAMP=$(date -u +%H%M%S)
python3 -m llmstudy.cli sweep "$KIND" --run-id "$RUN_ID" "$@" > "$OUT/console-$RUN_ID-$STAMP.txt" 2>&1
rc=$?
tail -c 3000 "$OUT/console-$RUN_ID-$STAMP.txt"
if [ $rc -eq 0 ]; then
  tar -czf "$OUT/$RUN_ID.tar.gz" -C "/root/runs/$EXP" "$RUN_ID"
else
  W="/root/runs/$EXP/.work-$RUN_ID"
  [ -d "$W" ] && tar -czf "$OUT/work-$RUN_ID-$STAMP.tar.gz" -C "$W" --exclude=model . 2>/dev/null
  ls "$W/points" 2>/dev/null | wc -l
fi
exit $rc
