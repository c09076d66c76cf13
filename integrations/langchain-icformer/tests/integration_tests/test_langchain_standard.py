"""langchain-tests' standard integration tests for ChatICFormer, on the real default LLM (SmolLM2-135M-Instruct,
CPU) with the shipped compressor."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from langchain_icformer import ChatICFormer
from langchain_tests.integration_tests import ChatModelIntegrationTests

from icformer_rag import SoftPromptLM, load_compressor


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
