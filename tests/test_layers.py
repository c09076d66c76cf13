"""The package's modules form layers: no module imports one that (directly or through others) imports it back.

Read from the source with `ast`, function-level imports included (a lazy import is still a dependency: it only
hides the cycle until the function runs)."""

from __future__ import annotations

import ast
from pathlib import Path

import icformer_rag

PACKAGE = Path(icformer_rag.__file__).parent


def _module_name(path: Path) -> str:
    parts = ("icformer_rag", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from . import quantize` names a module, `from .x import y` a name in x
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    paths = list(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    # A package's __init__ re-exports its modules: importing it is not what a module below depends on, so edges
    # into a package's __init__ are counted as edges into nothing (they would make every re-export a cycle).
    packages = {_module_name(p) for p in paths if p.name == "__init__.py"}
    return {_module_name(p): _imports(p, modules) - packages for p in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_reader_sees_relative_and_lazy_imports() -> None:
    graph = _graph()
    assert "icformer_rag.compressor" in graph["icformer_rag.eval"]  # `from .compressor import ...`, top level
    assert "icformer_rag.llm" in graph["icformer_rag.eval_run"]
    assert "icformer_rag.quantize" in graph["icformer_rag.counterfactual"]  # `from . import quantize`
    assert "icformer_rag.data.instruct" in graph["icformer_rag.counterfactual"]  # inside a function


def test_no_import_cycles_in_the_package() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_a_cycle_is_found() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
