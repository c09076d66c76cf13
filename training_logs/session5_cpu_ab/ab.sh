#!/usr/bin/env bash
# CPU A/B: self-feed 0.5 vs 0 from run 7's release, AE only, 128-token windows, batch 8, lr 3e-4, 120 steps.
set -e
cd /work/main && source .venv/bin/activate
for feed in 0.0 0.5; do
  out=/tmp/ab/feed$feed; rm -rf $out
  icformer-rag train --init-from .devstage/init/release --data-dir .data/corpus --out-dir $out --batch-size 8 \
    --stop-at-step 19500 --max-steps 40000 --lr 3e-4 --min-lr 3e-4 --warmup-steps 5 --readout-weight 1.0 --window-lengths 128 \
    --window-weights 1 --ae-fraction 1.0 --instruct-fraction 0 --device cpu --log-every 10 --no-progress \
    --ae-self-feed $feed --seed 3 --save-every 1000 > /tmp/ab/train_$feed.log 2>&1
done
for feed in 0.0 0.5; do
  icformer-rag eval --device cpu --checkpoint /tmp/ab/feed$feed/release --data-dir evalsets/realtext_dev --ae-windows 64 --ae-lengths 128 --batch-size 16 --out /tmp/ab/eval_$feed.json > /tmp/ab/eval_$feed.log 2>&1
done
