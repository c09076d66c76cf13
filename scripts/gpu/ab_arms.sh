#!/usr/bin/env bash
# Issue 14's A/B on one GPU: four arms started side by side from the shipped checkpoint (equal wall-clock, one
# GPU shared: equal GPU minutes), each in its own out-dir under /tmp/work. Run after `device_job.sh setup` and
# `device_job.sh initdir`; follow with `device_job.sh wait`, then scripts/gpu/ab_eval.sh.
#   a   the IC-Former with the frozen reader, on the counterfactual records (the baseline arm)
#   b   + a reader adapter (LoRA r=16 on every linear layer, on only when digests are in the prompt)
#   c   b + two context layers (self-attention over each window before the digests read it)
#   ft  the full-text reader baseline: the same LoRA recipe on the same records with the text in the prompt
# MINUTES (default 11) bounds each arm's training, compile time included.
set -euo pipefail
W=/tmp/work
MIN=${MINUTES:-11}
common=(--data-dir "$W/corpus_sub" --instruct-file "$W/cf_train.jsonl" --init-from "$W/init" --batch-size 32
  --max-steps 50000 --max-minutes "$MIN" --save-every 500 --log-every 25 --no-progress --compile-llm
  --readout-fraction 0.25 --window-weights 0.4 0.2 0.2 0.2)
mix=(--ae-fraction 0.3 --instruct-fraction 0.6 --readout-weight 1.0)
lora=(--reader-rank 16 --reader-alpha 32 --reader-lr 2e-4)
LOG=arm_a bash scripts/device_job.sh train "${common[@]}" "${mix[@]}" --out-dir "$W/arm_a"
LOG=arm_b bash scripts/device_job.sh train "${common[@]}" "${mix[@]}" "${lora[@]}" --out-dir "$W/arm_b"
LOG=arm_c bash scripts/device_job.sh train "${common[@]}" "${mix[@]}" "${lora[@]}" --context-layers 2 --out-dir "$W/arm_c"
LOG=arm_ft bash scripts/device_job.sh train "${common[@]}" "${lora[@]}" --ae-fraction 0 --instruct-fraction 1 \
  --instruct-context text --out-dir "$W/arm_ft"
sleep 45
for a in a b c ft; do echo "== arm_$a"; tail -c 1500 "$W/arm_$a.log"; done
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv
