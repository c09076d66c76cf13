"""langchain-tests' standard unit tests for ChatICFormer, on a tiny random Llama with the real SmolLM2 tokenizer."""

from __future__ import annotations

import functools
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

import torch  # noqa: E402
from langchain_icformer import ChatICFormer  # noqa: E402
from langchain_tests.integration_tests import ChatModelIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from icformer_rag import ContextCompressor, SoftPromptLM, load_compressor  # noqa: E402
from icformer_rag.llm import load_tokenizer  # noqa: E402


@functools.cache
def tiny_lm() -> SoftPromptLM:
    tokenizer = load_tokenizer()
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        llm = LlamaForCausalLM(config).eval().requires_grad_(False)
    llm.name_or_path = "tiny-random-llama"
    compressor = ContextCompressor.from_llm(
        llm, tokenizer, num_blocks=1, num_digest_tokens=8, window_tokens=32, intermediate_size=64
    )
    return SoftPromptLM(llm, tokenizer, compressor)


class TestChatICFormerStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatICFormer]:
        return ChatICFormer

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"lm": tiny_lm()}


@functools.cache
def default_lm() -> SoftPromptLM:
    compressor, llm, tokenizer = load_compressor(device="cpu", dtype="float32")
    return SoftPromptLM(llm, tokenizer, compressor)


@pytest.mark.slow
class TestChatICFormerIntegrationStandard(ChatModelIntegrationTests):
    """The standard integration suite on the real default LLM (SmolLM2-135M-Instruct, CPU)."""

    @property
    def chat_model_class(self) -> type[ChatICFormer]:
        return ChatICFormer

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"lm": default_lm(), "max_tokens": 24}
