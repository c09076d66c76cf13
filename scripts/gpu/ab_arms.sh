#!/usr/bin/env bash
# Issue 14's A/B on one GPU: arms started side by side (equal wall-clock, one GPU shared: equal GPU minutes), each
# in its own out-dir under /tmp/work. Run after `device_job.sh setup` and `device_job.sh initdir`; follow with
# `device_job.sh wait`, then one eval call over every arm.
#   a   the IC-Former with the frozen reader, on the counterfactual records (the baseline arm)
#   b   + a reader adapter (LoRA r=16 on every linear layer, on only when digests are in the prompt); with the
#       shipped run 9 as init this continues run 9 (its reader included)
#   bl  b on the long/name-heavy record set BL_RECORDS (default $W/cf_train_long.jsonl; $W/cf_train_long_strict.jsonl
#       meets the eval's length mix, with fewer records: icformer_rag/data/README.md), number questions capped at
#       25%, from an extra_*.tgz unpacked by `device_job.sh setup`; the trainer's argparse keeps the last
#       --instruct-file, so the one after "${common[@]}" wins
#   bs  bl on $W/cf_train_long_strict.jsonl (the eval's length mix exactly, 10,002 records; speeches 55% of them)
#   n   b + invented names in auto-encoding windows: --ae-invent 0.08 (8% of each window's tokens overwritten by
#       names made of random word pieces, recurring; icformer_rag/training/invented.py)
#   n2  n at twice the dose: --ae-invent 0.16
#   kt  b + token-level KL to the tuned full-text reader (--kl-weight 1.0 --kl-teacher baselines/full-text-reader-smollm2:
#       the teacher reads the text through that adapter; one more LLM forward per instruction step)
#       (compiling the teacher's graphs delays its first metrics line ~3.5 min and its end ~3 min past its minutes)
#   n4  n at four times the dose: --ae-invent 0.32
#   nk  n2 + kt: invented names in auto-encoding and the KL to the tuned full-text reader together
#   c   b + two context layers (self-attention over each window before the digests read it)
#   d   the ICAE-style encoder (--encoder llm: the LLM + its own LoRA r=16 reads each window and 128 memory tokens)
#       with a new reader adapter, from scratch
#   dr  d with its reader started from the init checkpoint's (--reader-from): the encoder alone starts from zero
#   d2  d at 2x compression (256 memory tokens per 512-token window; 57 GB: not beside d)
#   w2  b widened to 2x compression: 256 digests per 512-token window, each of the init checkpoint's 128 digest
#       queries copied (its reader continued, a new readout head)
#   ft  the full-text reader baseline: the same LoRA recipe on the same records with the text in the prompt
# ARMS (default "a b c ft") picks the arms, each optionally with its own minutes ("b:15 ft:7"); MINUTES (default 11)
# bounds the training of an arm that names none, compile time included.
set -euo pipefail
W=/tmp/work
MIN=${MINUTES:-11}
data=(--data-dir "$W/corpus_sub" --instruct-file "$W/cf_train.jsonl" --batch-size 32 --max-steps 50000
  --save-every 500 --log-every 25 --no-progress --compile-llm --readout-fraction 0.25
  --window-weights 0.4 0.2 0.2 0.2)
common=("${data[@]}" --init-from "$W/init")
mix=(--ae-fraction 0.3 --instruct-fraction 0.6 --readout-weight 1.0)
lora=(--reader-rank 16 --reader-alpha 32 --reader-lr 2e-4)
run() { LOG=arm_$1 bash scripts/gpu/device_job.sh train "${@:2}" --max-minutes "$min" --out-dir "$W/arm_$1"; }
for spec in ${ARMS:-a b c ft}; do
  arm=${spec%%:*}; min=${spec#*:}; [ "$min" = "$spec" ] && min=$MIN
  case "$arm" in
    a) run a "${common[@]}" "${mix[@]}" ;;
    b) run b "${common[@]}" "${mix[@]}" "${lora[@]}" ;;
    bl) bl=${BL_RECORDS:-$W/cf_train_long.jsonl}
      [ -f "$bl" ] || { echo "arm bl: $bl missing (put its extra_*.tgz, run setup)" >&2; exit 2; }
      run bl "${common[@]}" "${mix[@]}" "${lora[@]}" --instruct-file "$bl" ;;
    bs) [ -f "$W/cf_train_long_strict.jsonl" ] || { echo "arm bs: its records are missing" >&2; exit 2; }
      run bs "${common[@]}" "${mix[@]}" "${lora[@]}" --instruct-file "$W/cf_train_long_strict.jsonl" ;;
    n) run n "${common[@]}" "${mix[@]}" "${lora[@]}" --ae-invent 0.08 ;;
    n2) run n2 "${common[@]}" "${mix[@]}" "${lora[@]}" --ae-invent 0.16 ;;
    n4) run n4 "${common[@]}" "${mix[@]}" "${lora[@]}" --ae-invent 0.32 ;;
    nk) run nk "${common[@]}" "${mix[@]}" "${lora[@]}" --ae-invent 0.16 --kl-weight 1.0 --kl-teacher baselines/full-text-reader-smollm2 ;;
    kt) run kt "${common[@]}" "${mix[@]}" "${lora[@]}" --kl-weight 1.0 --kl-teacher baselines/full-text-reader-smollm2 ;;
    c) run c "${common[@]}" "${mix[@]}" "${lora[@]}" --context-layers 2 ;;
    d) run d "${data[@]}" "${mix[@]}" "${lora[@]}" --encoder llm --encoder-rank 16 ;;
    dr) run dr "${data[@]}" "${mix[@]}" "${lora[@]}" --encoder llm --encoder-rank 16 --reader-from "$W/init/reader_adapter" ;;
    d2) run d2 "${data[@]}" "${mix[@]}" "${lora[@]}" --encoder llm --encoder-rank 16 --num-digest-tokens 256 ;;
    w2) run w2 "${common[@]}" "${mix[@]}" "${lora[@]}" --num-digest-tokens 256 ;;
    ft) run ft "${common[@]}" "${lora[@]}" --ae-fraction 0 --instruct-fraction 1 --instruct-context text ;;
    *) echo "unknown arm $arm" >&2; exit 2 ;;
  esac
done
sleep 45
for spec in ${ARMS:-a b c ft}; do a=${spec%%:*}; echo "== arm_$a"; tail -c 1500 "$W/arm_$a.log"; done
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv
