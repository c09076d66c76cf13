"""langchain-tests' standard integration tests for ChatICFormer, on the real default LLM (SmolLM2-135M-Instruct,
CPU) with the shipped compressor."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_icformer import ChatICFormer
from langchain_tests.integration_tests import ChatModelIntegrationTests

from icformer_rag.testing import load_default_lm


@pytest.mark.slow
class TestChatICFormerIntegrationStandard(ChatModelIntegrationTests):
    """The standard integration suite on the real default LLM (SmolLM2-135M-Instruct, CPU)."""

    @property
    def chat_model_class(self) -> type[ChatICFormer]:
        return ChatICFormer

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"lm": load_default_lm(), "max_tokens": 24}
