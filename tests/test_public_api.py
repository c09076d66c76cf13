"""The adapter packages (integrations/) use only icformer_rag's public names, `icformer_rag.__all__`: the core can
change anything else without breaking a published adapter."""

from __future__ import annotations

import ast
from pathlib import Path

import icformer_rag

INTEGRATIONS = Path(__file__).resolve().parents[1] / "integrations"


def test_adapters_import_only_names_in_icformer_rag_all():
    public = set(icformer_rag.__all__)
    sources = [p for p in INTEGRATIONS.rglob("*.py") if "tests" not in p.relative_to(INTEGRATIONS).parts]
    assert len(sources) >= 8
    outside = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                outside += [f"{path.name}: import {a.name}" for a in node.names if a.name.startswith("icformer_rag")]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("icformer_rag"):
                names = [a.name for a in node.names]
                if node.module != "icformer_rag" or not set(names) <= public:
                    outside.append(f"{path.name}: from {node.module} import {', '.join(names)}")
    assert not outside, outside


def test_all_names_exist():
    assert all(hasattr(icformer_rag, name) for name in icformer_rag.__all__)
