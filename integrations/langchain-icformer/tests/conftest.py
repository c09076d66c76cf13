"""Fixtures of the LangChain adapter tests: the tiny random Llama and compressor, the real default LLM with the
shipped compressor and the offline MiniLM embedder (icformer_rag.testing)."""

from icformer_rag.testing import (  # noqa: F401 - fixtures
    compress_calls,
    compressor,
    default_lm,
    minilm_path,
    soft_lm,
    tiny_llm,
    tokenizer,
)
