#!/usr/bin/env bash
# The LlamaIndex adapters on the oldest llama-index-core llama-index-icformer allows, 0.12.52: the last release
# with QueryPipeline (deprecated in 0.12.44, removed in 0.13.0). Makes a fresh virtual environment (in $1; default: a
# temporary folder, removed afterwards), installs the project into it exactly as scripts/setup.sh does but under
# scripts/constraints-llama-index-0.12.txt (llama-index-core and its FAISS / Hugging Face packages for 0.12), and runs
# the QueryPipeline tests (real FAISS, MiniLM, default LLM and compressor) and the adapters' unit tests there. Fails if
# any test fails or is skipped: the QueryPipeline tests skip on 0.13+, so a skip here means they did not run. Reuses the converted default LLM in $ICFORMER_RAG_HOME
# (or ~/.cache/icformer_rag) when there is one. Run it from any directory, with any virtual environment active or none.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -ge 1 ]]; then
    venv="$1"
else
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    venv="$tmp/venv"
fi
# The base interpreter, not an active environment's: the new one must see none of its packages.
base="$(python3 -c 'import sys; print(sys._base_executable)')"
"$base" -m venv "$venv"
py="$venv/bin/python"

PIP_CONSTRAINT="$PWD/scripts/constraints-llama-index-0.12.txt" PYTHON="$py" bash scripts/setup.sh
"$py" -c "import llama_index.core as c; assert c.__version__ == '0.12.52', c.__version__; print('llama-index-core', c.__version__)"

# llama-index-core 0.12 reads NLTK's stopwords and punkt_tab from $NLTK_DATA/_static/nltk_cache (default: the
# user's cache folder) and downloads them when they are missing there. Its wheel ships both under
# llama_index/core/_static/nltk_cache: point NLTK_DATA at that package folder, so that nothing is downloaded.
NLTK_DATA="$("$py" -c 'import os, llama_index.core as c; print(os.path.dirname(c.__file__))')"
export NLTK_DATA

log="$(mktemp)"
tests=integrations/llama-index-icformer/tests
"$py" -m pytest -q -rs -p no:cacheprovider "$tests/integration_tests/test_llama_index_query_pipeline.py" \
    "$tests/unit_tests/test_llama_index_unit.py" | tee "$log"
summary="$(tail -n 1 "$log")"
rm -f "$log"
# Only passes (and warnings): a skipped, xfailed or deselected test fails this run.
if ! [[ $summary =~ ^[0-9]+\ passed(,\ [0-9]+\ warnings?)?\ in\  ]]; then
    echo "llama-index-core 0.12 tests: not all passed ($summary)" >&2
    exit 1
fi
