#!/usr/bin/env bash
# Prepare what a training session on the lent GPU carries, in the git-ignored .devstage/, and print the calls.
#
#   bash scripts/gpu/stage_training.sh [CORPUS_DIR]     (default .data/corpus; build it first: icformer-rag data build)
#   INIT=COMMIT:PATH bash scripts/gpu/stage_training.sh  also stages a release checkpoint kept only in git history
#                    (e.g. INIT=ad46839:training_logs/run7/release) into .devstage/init, for one more call
#
# Every device call carries the tracked tree too (~30 MB with the shipped checkpoint) and at most 64 MiB in all,
# so the default LLM's 98 MB GGUF travels in 25 MB parts (../shared/tools/stage-llm-for-device makes 50 MB ones,
# which do not fit beside this tree) and the corpus as a .tar.gz in 25 MB parts. scripts/gpu/device_job.sh `setup`
# joins them on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root (this file is scripts/gpu/stage_training.sh)
corpus=${1:-.data/corpus}
[ -f "$corpus/train.bin" ] || { echo "no corpus in $corpus: run icformer-rag data build --out $corpus" >&2; exit 2; }
# What a call carries besides its part: the tracked tree and untracked files git does not ignore (33 MB in
# session 6; 33 MB parts beside it came within 1 MB of the 64 MiB limit, hence 25 MB).
part_bytes=25000000
tree_bytes=$(git ls-files -z -co --exclude-standard | xargs -0 cat 2>/dev/null | wc -c)
if [ $((tree_bytes + part_bytes + 200000)) -gt $((64 * 1024 * 1024)) ]; then
  echo "the tree is $tree_bytes bytes: with a $part_bytes-byte part it passes the 64 MiB a call carries" >&2; exit 2
fi
stage=../shared/tools/stage-llm-for-device
[ -x "$stage" ] || { echo "$stage not found (it ships beside the checkout)" >&2; exit 2; }
"$stage" .devstage >/dev/null
(cd .devstage/llm && cat part_* > whole.gguf && rm part_* && split -b $part_bytes whole.gguf part_ && rm whole.gguf)
rm -rf .devstage/data && mkdir -p .devstage/data
tar czf - -C "$(dirname "$corpus")" "$(basename "$corpus")" | split -b $part_bytes - .devstage/data/data_
rm -rf .devstage/init
if [ -n "${INIT:-}" ]; then
  # A checkpoint that is not the shipped one stays out of the tree (every call carries the tree): it lives in
  # a commit and travels on its own call.
  mkdir -p .devstage/init/release
  git archive "$INIT" | tar xf - -C .devstage/init/release  # COMMIT:PATH names a tree: its files, at the root
  ls -la .devstage/init/release
fi
ls -la .devstage/llm .devstage/data .devstage/whl
llm_parts=(.devstage/llm/part_*)
echo
echo "Device calls (each carry list below; the last one also needs .devstage/whl for setup):"
for p in "${llm_parts[@]}"; do
  echo "  carry [\"$p\"]: bash scripts/gpu/device_job.sh put $p"
done
if [ -n "${INIT:-}" ]; then
  echo "  carry [\".devstage/init\"]: bash scripts/gpu/device_job.sh put .devstage/init/release"
  echo "    (then: bash scripts/gpu/device_job.sh initdir /tmp/m/release /tmp/m/release/readout.safetensors)"
fi
# A corpus of more than one part (e.g. with the larger instruction set) cannot travel beside the tree in one
# call: every part but the last gets a call of its own; the last travels with the wheel and runs setup.
data_parts=(.devstage/data/data_*)
last=${data_parts[-1]}
for p in "${data_parts[@]}"; do
  [ "$p" = "$last" ] || echo "  carry [\"$p\"]: bash scripts/gpu/device_job.sh put $p"
done
echo "  carry [\"$last\", \".devstage/whl\"]: bash scripts/gpu/device_job.sh put $last &&" \
  "bash scripts/gpu/device_job.sh setup && ...   (then initdir, train, wait: docs/training.md)"
