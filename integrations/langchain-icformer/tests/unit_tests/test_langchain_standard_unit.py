"""langchain-tests' standard unit tests for ChatICFormer, on a tiny random Llama with the real SmolLM2 tokenizer."""

from __future__ import annotations

import functools
from typing import Any

import torch
from langchain_icformer import ChatICFormer
from langchain_tests.unit_tests import ChatModelUnitTests
from transformers import LlamaConfig, LlamaForCausalLM

from icformer_rag import ContextCompressor, SoftPromptLM
from icformer_rag.llm import load_tokenizer


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
