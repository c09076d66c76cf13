#!/usr/bin/env bash
# Steps of a training session on the lent GPU machine (the workplace's `device` tool). Each call there runs
# in a fresh copy of the repository; files under /tmp survive between calls while the machine stays warm.
#
#   put FILES...     copy carried files (LLM parts, data parts) to /tmp/m
#   setup            rebuild the default LLM from its GGUF parts, convert it, unpack the corpus (the split parts
#                    /tmp/m/data_*, concatenated: one tarball), then unpack each /tmp/m/extra_*.tgz on its own
#                    into /tmp/work (a whole tarball each, e.g. extra_cf_long.tgz holding cf_train_long.jsonl)
#   initdir [CKPT] [HEAD]  assemble $W/init: the shipped checkpoint (or CKPT) with its training-only readout head
#                    (default training_state/smollm2-135m-instruct/readout.safetensors) beside it,
#                    for `train --init-from /tmp/work/init`
#   train ARGS...    start `python -m icformer_rag.training ARGS` in the background (survives the call);
#                    with NPROC=N set, under `torchrun --standalone --nproc_per_node N` instead;
#                    LOG=name writes $W/name.log (several runs side by side)
#   wait SECONDS     follow the training log until it ends or SECONDS pass; if it ended, collect every run with a
#                    release (below). Size the arms' minutes so that training ends >= 60 s before this call's limit.
#   eval ARGS...     run `python -m icformer_rag eval ARGS` in the foreground
#   bench ARGS...    time an AE training step, eager against --compile-llm (scripts/bench_train_step.py ARGS;
#                    writes $OUT/bench_train_step.json)
#   collect RUN      copy RUN's metrics and release checkpoint (15 MB parts), as $OUT/NAME/ (NAME = RUN's folder
#                    name, so several arms' collects in one call do not overwrite each other), eval JSONs and log tails
#
# Several steps chain in one call: bash scripts/gpu/device_job.sh setup && bash scripts/gpu/device_job.sh train ...
set -euo pipefail
# Every path below (icformer_rag/, .devstage/whl, the default checkpoint and readout head) is relative to the
# repository root, where each device call starts: refuse anywhere else instead of failing halfway.
if [ ! -f scripts/gpu/device_job.sh ] || [ ! -d icformer_rag ]; then
  echo "device_job.sh: run it from the repository root (bash scripts/gpu/device_job.sh STEP ...), not from $PWD" >&2
  exit 2
fi
step=${1:?usage: bash scripts/gpu/device_job.sh put|setup|initdir|train|wait|eval|bench|collect ARGS...}; shift
export PYTHONPATH=/tmp/site:$PWD ICFORMER_RAG_HOME=/tmp/icf PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
W=/tmp/work
mkdir -p "$W" /tmp/m
# Whether a training started by `train` is still alive (its pids are in $W/train.pids).
running() { [ -f "$W/train.pids" ] && while read -r pid; do kill -0 "$pid" 2>/dev/null && return 0; done < "$W/train.pids"; return 1; }
# RUN's metrics and release (15 MB parts) as $OUT/NAME/, eval JSONs and every log's tail in $OUT/logs.txt. The
# device brings back at most 8 files: one arm is 3 (metrics + 2 parts), two arms 6.
collect_run() {
  local run=$1 dest
  dest="$OUT/$(basename "$run")"
  mkdir -p "$dest"
  cp "$run/metrics.jsonl" "$dest/" 2>/dev/null || true
  if [ -d "$run/release" ]; then
    tar czf - -C "$run" release | split -b 15000000 - "$dest/release.tgz.part_"
  fi
  for f in "$W"/eval*.json; do [ -f "$f" ] && cp "$f" "$OUT/"; done
  for f in "$W"/*.log; do echo "== $f"; tail -c 4000 "$f"; done > "$OUT/logs.txt" 2>/dev/null || true
  ls -la "$OUT" "$dest"
}
case "$step" in
  put)
    for f in "$@"; do cp -r "$f" /tmp/m/; done
    ls -la /tmp/m ;;
  setup)
    if [ ! -f /tmp/m/smol.gguf ]; then cat /tmp/m/part_* > /tmp/m/smol.gguf; fi
    sha256sum /tmp/m/smol.gguf
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .devstage/whl/*.whl 2>&1 | tail -2 || true
    python3 -c "from icformer_rag.llm import default_llm_path; print(default_llm_path('/tmp/m/smol.gguf'))"
    if ls /tmp/m/data_* >/dev/null 2>&1 && [ ! -d "$W/corpus" ]; then cat /tmp/m/data_* | tar xzf - -C "$W"; fi
    # Extra tarballs (another record set) cannot join the data_* parts: each is a whole .tgz, unpacked alone.
    for f in /tmp/m/extra_*.tgz; do if [ -f "$f" ]; then echo "unpacking $f"; tar xzf "$f" -C "$W"; fi; done
    ls -la "$W" "$W/corpus" || true
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv ;;
  initdir)
    rm -rf "$W/init" && cp -r "${1:-icformer_rag/checkpoints/smollm2-135m-instruct}" "$W/init"
    cp "${2:-training_state/smollm2-135m-instruct/readout.safetensors}" "$W/init/readout.safetensors"
    ls -la "$W/init" ;;
  train)
    if [ -n "${NPROC:-}" ]; then launch=(python3 -m torch.distributed.run --standalone --nproc_per_node "$NPROC"); else launch=(python3); fi
    setsid nohup "${launch[@]}" -m icformer_rag.training "$@" > "$W/${LOG:-train}.log" 2>&1 < /dev/null &
    # A pid file, not `pgrep -f icformer_rag.training`: that pattern also matches the device call's own shell when
    # its command line names the module (session 11 lost ~6 device minutes to a wait that never saw the end).
    echo $! >> "$W/train.pids"
    echo "started training, pid $!" ;;
  wait)
    deadline=$(( $(date +%s) + ${1:-60} ))
    while [ "$(date +%s)" -lt "$deadline" ] && running; do sleep 10; done
    for log in "$W"/*.log; do [ -f "$log" ] && [ "$log" != "$W/eval.log" ] || continue; echo "== $log"; tail -c 3000 "$log" | tr "\r" "\n" | tail -4; done
    # With --no-progress the log stays quiet while training runs; the last metrics line says where it is.
    for m in "$W"/*/metrics.jsonl; do [ -f "$m" ] && { echo "== $m"; tail -n 1 "$m" | cut -c1-240; }; done
    # Once training has ended, every run's release comes back in this same call: a machine that goes back before
    # the next call (30 s after this one) takes nothing with it (session 16 lost two arms that way).
    if running; then echo "training still running"; else
      echo "training ended"
      for rel in "$W"/*/release; do if [ -d "$rel" ]; then collect_run "$(dirname "$rel")"; fi; done
    fi ;;
  eval)
    python3 -m icformer_rag eval "$@" 2>&1 | tee "$W/eval.log" ;;
  bench)
    python3 scripts/bench_train_step.py --json "$OUT/bench_train_step.json" "$@" 2>&1 | tee "$W/bench.log" ;;
  collect)
    collect_run "${1:-$W/run}" ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
