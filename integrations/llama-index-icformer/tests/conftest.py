"""Fixtures of the LlamaIndex adapter tests: the tiny random Llama and compressor, the real default LLM with the
shipped compressor and the offline MiniLM embedder (icformer_rag.testing); that LLM as an ICFormerLLM with the
sample index for the end-to-end modules (the sample corpus is in llama_index_samples.py)."""

from __future__ import annotations

import pytest
from llama_index_samples import build_llama_index

from icformer_rag import DigestStore
from icformer_rag.testing import (  # noqa: F401 - fixtures
    compress_calls,
    compressor,
    default_lm,
    minilm_path,
    soft_lm,
    tiny_llm,
    tokenizer,
)


@pytest.fixture(scope="module")
def llama_llm(default_lm, tmp_path_factory):  # noqa: F811 - the fixture imported above
    """The real default LLM as an ICFormerLLM (48 new tokens) over a fresh on-disk digest store, one per module."""
    from llama_index.llms.icformer import ICFormerLLM

    return ICFormerLLM(default_lm, DigestStore(tmp_path_factory.mktemp("digests")), max_new_tokens=48)


@pytest.fixture(scope="module")
def sample_index(llama_llm, minilm_path):  # noqa: F811 - the fixture imported above
    """The sample documents as a FAISS VectorStoreIndex whose digests `llama_llm`'s store got at indexing time."""
    return build_llama_index(llama_llm, minilm_path)
