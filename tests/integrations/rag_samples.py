"""The sample corpus shipped with icformer-rag, as the RAG tests index it (a module, not conftest, so that test
modules can import it whatever conftest pytest imported last)."""

from __future__ import annotations

from pathlib import Path

import icformer_rag

SAMPLES = Path(icformer_rag.__file__).parent / "samples"


def sample_paragraphs() -> list[tuple[str, str]]:
    """(file name, paragraph) for every paragraph of the shipped sample documents."""
    out = []
    for path in sorted(SAMPLES.glob("*.txt")):
        for para in path.read_text().split("\n\n"):
            if para.strip():
                out.append((path.name, para.strip()))
    return out
