"""Shared fixtures: a tiny random Llama with the real SmolLM2 tokenizer, a tiny compressor, the real default LLM.

The tiny model is the point of most tests: it runs the exact code paths of the default LLM (Llama architecture,
tied embeddings, the same tokenizer and chat template) in milliseconds. Tests that need the real default LLM
are marked `slow`; it loads once per session.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from icformer_rag import ContextCompressor, SoftPromptLM
from icformer_rag.llm import load_llm, load_tokenizer

TINY_COMPRESSOR = dict(num_blocks=2, num_digest_tokens=8, window_tokens=32, intermediate_size=128)


def make_tiny_llm(vocab_size: int, *, hidden_size: int = 64, seed: int = 0, name: str = "tiny-random-llama"):
    """A seeded random Llama, frozen and in eval mode. A wide initializer range makes the random model's
    greedy continuations vary with the prompt (with 0.02 and tied embeddings it only echoes the last token),
    so generation tests compare real text."""
    config = LlamaConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=0.1,
        bos_token_id=1,
        eos_token_id=2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval().requires_grad_(False)
    model.name_or_path = name
    return model


@pytest.fixture(scope="session")
def llm_factory():
    """`make_tiny_llm`, for tests that need a second LLM (other width, other weights)."""
    return make_tiny_llm


@pytest.fixture(scope="session")
def compressor_kwargs() -> dict:
    """Shape of the tiny compressor, for tests that build their own."""
    return dict(TINY_COMPRESSOR)


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer (local, converted once)."""
    return load_tokenizer()


@pytest.fixture(scope="session")
def tiny_llm(tokenizer):
    return make_tiny_llm(len(tokenizer))


@pytest.fixture(scope="session")
def compressor(tiny_llm, tokenizer):
    """Untrained tiny compressor: hidden 64, 2 blocks, 4 heads, k=8 digests per 32-token window (ratio 4)."""
    return ContextCompressor.from_llm(tiny_llm, tokenizer, **TINY_COMPRESSOR)


@pytest.fixture(scope="session")
def soft_lm(tiny_llm, tokenizer, compressor):
    return SoftPromptLM(tiny_llm, tokenizer, compressor)


@pytest.fixture(scope="session")
def default_llm():
    """The real default LLM (SmolLM2-135M-Instruct), CPU fp32, loaded once."""
    return load_llm(device="cpu", dtype="float32")
