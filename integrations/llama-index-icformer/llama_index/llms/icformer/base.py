"""ICFormerLLM: a local Hugging Face chat LLM that reads digest markers in its prompts as digest vectors."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from icformer_rag import BaseDigestStore, ChatPrompt, DigestStore, GenerationSettings, SoftPromptLM

_ROLES = {MessageRole.CHATBOT: "assistant", MessageRole.MODEL: "assistant", MessageRole.DEVELOPER: "system"}


class ICFormerLLM(CustomLLM):
    """A local Hugging Face chat LLM that reads IC-Former digests in place of retrieved text.

    Prompts go through the LLM's own chat template (`complete` sends the prompt as one user message); every
    digest marker ``⟦icf:<key>.<tag>⟧`` in them (put there by :class:`ICFormerNodePostprocessor`) is replaced by
    the digest's vectors from `store`. A marker whose digest is missing raises ValueError naming it. Without
    markers it is an ordinary local chat LLM. Only markers made in this process are read as digests (the tag is
    an HMAC under a per-process secret): marker-looking text in a query, a node's text or metadata, or made by
    another process is read as text, and can neither pull a digest nor tell whether a text is in the store. Greedy
    decoding unless `temperature > 0`. Responses carry the token counts (`prompt_tokens`, `completion_tokens`,
    `total_tokens`) and the digest keys read (`icformer_digest_keys`) in `additional_kwargs`.

    Example:
        ```python
        from llama_index.llms.icformer import ICFormerLLM
        from llama_index.postprocessor.icformer import ICFormerNodePostprocessor

        llm = ICFormerLLM.from_default(max_new_tokens=128)
        engine = index.as_query_engine(llm=llm, node_postprocessors=[ICFormerNodePostprocessor.for_llm(llm)])
        print(engine.query("Who founded Velmora?"))
        ```
    """

    model_name: str = Field(default="", description="Name reported in metadata (default: the LLM's name or path).")
    max_new_tokens: int = Field(default=256, ge=1, description="Most new tokens per answer.")
    temperature: float = Field(default=0.0, ge=0.0, description="0 decodes greedily; above 0 samples.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (only when sampling).")
    repetition_penalty: float = Field(
        default=1.0, gt=0.0, description="Above 1 makes tokens the answer already holds less likely; 1 = off."
    )
    context_window: int = Field(default=0, ge=0, description="Prompt + answer positions (default: the LLM's).")
    _lm: SoftPromptLM = PrivateAttr()
    _store: BaseDigestStore = PrivateAttr()
    _tokenizer: Any = PrivateAttr(default=None)

    def __init__(self, lm: SoftPromptLM, store: BaseDigestStore | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lm = lm
        self._store = store if store is not None else DigestStore()
        if not self.model_name:
            self.model_name = str(getattr(lm.llm, "name_or_path", "") or "local-llm")
        if not self.context_window:
            self.context_window = int(lm.max_positions or 2048)

    @classmethod
    def from_default(
        cls,
        checkpoint: str | Path | None = None,
        llm_name_or_path: str | Path | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        store: BaseDigestStore | None = None,
        **kwargs: Any,
    ) -> ICFormerLLM:
        """Load the default LLM (SmolLM2-135M-Instruct) and the shipped compressor checkpoint, or any local
        LLM with a compressor checkpoint trained for it (see :func:`icformer_rag.load_compressor`)."""
        lm = SoftPromptLM.from_pretrained(checkpoint, llm_name_or_path, device=device, dtype=dtype)
        return cls(lm, store, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "ICFormerLLM"

    @property
    def lm(self) -> SoftPromptLM:
        return self._lm

    @property
    def store(self) -> BaseDigestStore:
        return self._store

    @property
    def tokenizer(self) -> Callable[[str], list[int]]:
        """A LlamaIndex tokenizer (text -> list of ids) that counts what this LLM reads: its own tokenizer for
        text, and each digest marker as its digest's positions (BEGIN, the vectors, END; placeholder ids). An
        engine running :class:`ICFormerNodePostprocessor` uses it for prompt packing on its own; elsewhere pass it
        on, e.g. ``PromptHelper.from_llm_metadata(llm.metadata, tokenizer=llm.tokenizer)`` or
        ``Settings.tokenizer = llm.tokenizer``. A marker whose digest is not in the store raises ValueError."""
        if self._tokenizer is None:
            self._tokenizer = functools.partial(self._lm.position_ids, digests=self._store)
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        """Prompt positions `text` takes for this LLM (a marker counts as its digest + BEGIN/END)."""
        return len(self.tokenizer(text))

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            model_name=self.model_name,
        )

    # ------------------------------------------------------------------------------------------ helpers
    def _settings(self, **kwargs: Any) -> GenerationSettings:
        return GenerationSettings.from_temperature(
            kwargs.get("max_new_tokens", self.max_new_tokens),
            kwargs.get("temperature", self.temperature),
            kwargs.get("top_p", self.top_p),
            kwargs.get("repetition_penalty", self.repetition_penalty),
        )

    def _prompt(self, messages: Sequence[ChatMessage]) -> ChatPrompt:
        return self._lm.build_chat_inputs([_to_chat_dict(m) for m in messages], self._store)

    @staticmethod
    def _usage(prompt: ChatPrompt, completion_tokens: int) -> dict[str, Any]:
        return {
            "prompt_tokens": prompt.num_positions,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt.num_positions + completion_tokens,
            "icformer_digest_keys": list(prompt.digest_keys),
        }

    def _stream(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        prompt = self._prompt(messages)
        counts: list[int] = []
        text = ""
        pieces = self._lm.stream_prompt(prompt, self._settings(**kwargs), counts)
        try:
            for piece in pieces:
                delta = piece.lstrip() if not text else piece  # as generate(), no leading blanks
                if not delta:
                    continue
                text += delta
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)
        finally:  # a consumer that left stops the generation at its next token
            pieces.close()
        usage = self._usage(prompt, counts[0] if counts else 0)
        yield ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta="", additional_kwargs=usage
        )

    # --------------------------------------------------------------------------------------------- chat
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        prompt = self._prompt(messages)
        result = self._lm.generate_prompts([prompt], self._settings(**kwargs))[0]
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=result.text),
            additional_kwargs=self._usage(prompt, result.completion_tokens),
            raw={"finish_reason": result.finish_reason},
        )

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._stream(messages, **kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await asyncio.to_thread(self.chat, messages, **kwargs)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return _in_thread(self._stream(messages, **kwargs))

    # --------------------------------------------------------------------------------------- completion
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        _check_prompt(prompt, "complete")
        response = self.chat([ChatMessage(role=MessageRole.USER, content=prompt)], **kwargs)
        return CompletionResponse(
            text=response.message.content or "", additional_kwargs=response.additional_kwargs, raw=response.raw
        )

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        _check_prompt(prompt, "stream_complete")

        def gen() -> CompletionResponseGen:
            responses = self._stream([ChatMessage(role=MessageRole.USER, content=prompt)], **kwargs)
            try:
                for r in responses:
                    yield CompletionResponse(
                        text=r.message.content or "", delta=r.delta, additional_kwargs=r.additional_kwargs
                    )
            finally:  # a consumer that left stops the generation
                responses.close()

        return gen()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        _check_prompt(prompt, "acomplete")
        return await asyncio.to_thread(self.complete, prompt, formatted, **kwargs)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        _check_prompt(prompt, "astream_complete")
        return _in_thread(self.stream_complete(prompt, formatted, **kwargs))


async def _in_thread(iterator: Any) -> AsyncGenerator[Any, None]:
    """Drive a blocking generator from worker threads, one item at a time, so the event loop stays free."""
    done = object()
    try:
        while True:
            item = await asyncio.to_thread(next, iterator, done)
            if item is done:
                return
            yield item
    finally:  # the consumer left: stop the generation
        # ValueError: cancelled while a next() still runs in its thread; the stream closes when it is collected
        with contextlib.suppress(ValueError):
            iterator.close()


def _check_prompt(prompt: Any, method: str) -> None:
    if not isinstance(prompt, str):
        raise TypeError(f"{method}() takes the prompt as a str, got {type(prompt).__name__}")


def _to_chat_dict(message: ChatMessage) -> dict[str, str]:
    """A LlamaIndex chat message as a chat-template message; blocks other than text are refused."""
    role = message.role if isinstance(message.role, MessageRole) else MessageRole(message.role)
    for block in message.blocks:
        if getattr(block, "block_type", "text") != "text":
            raise ValueError(f"ICFormerLLM reads text only; got a {block.block_type!r} block")
    return {"role": _ROLES.get(role, role.value), "content": message.content or ""}
