#!/usr/bin/env bash
# One bundle for issue 14's device session, in carry-sized parts (session 14's way; the inputs are described in
# docs/training.md "Staging"). Run from the repo root after `scripts/setup.sh`, `../shared/tools/stage-llm-for-device`
# (.devstage/llm/part_*), the peft wheel in .devstage/whl, `icformer-rag data build --out .data/corpus`,
# `scripts/gpu/subset_corpus.py` (.data/corpus_sub) and the counterfactual records (.data/cf_train.jsonl).
#   bash scripts/gpu/bundle.sh build [RECORDS...]   parts .devstage/bundle/b_a? (56 MB each) of: data_aa (corpus_sub +
#        cf_train.jsonl), extra_*.tgz (each further records file, as it is named), the GGUF, the wheels and
#        `git archive HEAD` (the code, weights included). On the machine: `cat /tmp/m/b_* | tar xf - -C /tmp/m`.
#   bash scripts/gpu/bundle.sh hold                 move tracked files over 1 MB to /tmp/hold, so that the carried
#        tree stays ~8 MiB beside a 56 MB part (they travel inside code.tar). Never commit while held.
#   bash scripts/gpu/bundle.sh restore              move them back.
set -euo pipefail
[ -f pyproject.toml ] && [ -d scripts/gpu ] || { echo "run from the repo root" >&2; exit 2; }
case "${1:-}" in
  build)
    shift
    rm -rf /tmp/bundle .devstage/bundle; mkdir -p /tmp/bundle .devstage/bundle
    tar czf /tmp/bundle/data_aa -C .data corpus_sub cf_train.jsonl
    for f in "$@"; do
      name=$(basename "$f" .jsonl)
      tar czf "/tmp/bundle/extra_$name.tgz" -C "$(dirname "$f")" "$(basename "$f")"
    done
    cat .devstage/llm/part_* > /tmp/bundle/smol.gguf
    cp -r .devstage/whl /tmp/bundle/whl
    git archive --format=tar HEAD > /tmp/bundle/code.tar
    tar cf - -C /tmp/bundle . | split -b 56000000 - .devstage/bundle/b_
    ls -la /tmp/bundle .devstage/bundle ;;
  hold)
    [ -e /tmp/hold/list ] && { echo "/tmp/hold/list exists: restore first" >&2; exit 2; }
    mkdir -p /tmp/hold
    git ls-files -z | xargs -0 du -b | awk '$1>1000000{print $2}' > /tmp/hold/list.new
    while read -r f; do mkdir -p "/tmp/hold/$(dirname "$f")"; mv "$f" "/tmp/hold/$f"; done < /tmp/hold/list.new
    mv /tmp/hold/list.new /tmp/hold/list
    cat /tmp/hold/list ;;
  restore)
    while read -r f; do mv "/tmp/hold/$f" "$f"; done < /tmp/hold/list
    rm /tmp/hold/list
    git status --short ;;
  *) echo "usage: bash scripts/gpu/bundle.sh build [RECORDS...] | hold | restore" >&2; exit 2 ;;
esac
