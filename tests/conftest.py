"""Shared fixtures (icformer_rag.testing): a tiny random Llama with the real SmolLM2 tokenizer, a tiny compressor,
the real default LLM. Tests that need the real default LLM are marked `slow`; it loads once per session."""

from icformer_rag.testing import (  # noqa: F401 - fixtures
    TINY_COMPRESSOR,
    compressor,
    compressor_kwargs,
    default_llm,
    llm_factory,
    make_tiny_llm,
    soft_lm,
    tiny_llm,
    tokenizer,
)
