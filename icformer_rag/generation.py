"""Soft-prompt generation: a frozen chat LLM answers from digests spliced into its prompt embeddings.

The prompt is the LLM's own chat template around a user turn of the form

    {instruction}

    {context 1}
    {context 2}

    Question: {question}

where each context is either a digest (learned BEGIN embedding, the digest vectors, learned END
embedding) or, for the full-text baseline, the document's text. Splicing happens in one place,
:meth:`SoftPromptLM.build_inputs`; training uses the same layout.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import torch

from .compressor import ContextCompressor, load_compressor
from .digest import Digest
from .llm import max_positions
from .prompt import (
    DEFAULT_INSTRUCTION,
    check_text,
    count_foreign_markers,
    digest_block,
    encode_text,
    end_of_turn,
    guard_text,
    marker_for,
    pad_rows,
    render_prompt,
    split_markers,
)
from .reader import adapter_scope

Context = Digest | str
_log = logging.getLogger(__name__)


@dataclass
class GenerationSettings:
    """Decoding settings; greedy by default so that answers are reproducible."""

    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    # > 1 makes tokens already generated less likely (transformers' `repetition_penalty`), greedy or sampled.
    # Only the answer's own tokens count, never the prompt's or the documents'. For small LLMs that loop, such as
    # the default 135M one; try 1.1-1.3. 1.0 = off.
    repetition_penalty: float = 1.0
    # Generation ends as soon as the answer holds one of these strings (transformers' `stop_strings`); the text
    # is not cut here: callers that take stop strings cut the answer before the first one.
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.stop_strings, str):
            self.stop_strings = (self.stop_strings,)
        if not all(isinstance(s, str) for s in self.stop_strings):
            raise TypeError("stop_strings must be strings")
        self.stop_strings = tuple(s for s in self.stop_strings if s)
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be positive")
        if self.temperature <= 0:
            raise ValueError("temperature must be positive")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be positive (1.0 = off)")

    @classmethod
    def from_temperature(
        cls,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        **extra: Any,
    ) -> GenerationSettings:
        """Settings the way chat APIs (LangChain, LlamaIndex) state them: temperature 0 decodes greedily,
        above 0 samples at that temperature. `extra` goes to the constructor of `cls`."""
        temperature = float(temperature)
        if temperature < 0:
            raise ValueError("temperature must be >= 0 (0 decodes greedily)")
        return cls(
            max_new_tokens=int(max_new_tokens),
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else 1.0,
            top_p=float(top_p),
            repetition_penalty=float(repetition_penalty),
            **extra,
        )

    def kwargs(self) -> dict[str, Any]:
        # Every setting is passed explicitly, so these settings, not the LLM's own generation config, decide.
        # The penalty goes through our own processor and generate's `repetition_penalty` stays off (also when
        # the LLM's config sets one, as some instruct models' do): the prompt is given as embeddings, so the ids
        # generate sees are the answer's alone, and transformers (5.24) then skips each left-padded row's first
        # (padding length) answer tokens, penalising batched answers unevenly.
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        kw["repetition_penalty"] = 1.0
        if self.do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p)
        if self.repetition_penalty != 1.0:
            from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

            kw["logits_processor"] = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(self.repetition_penalty)])
        if self.stop_strings:
            kw["stop_strings"] = list(self.stop_strings)  # generate also needs the tokenizer: SoftPromptLM adds it
        return kw


class DigestSource(Protocol):
    """Where markers' digests are looked up: a :class:`~icformer_rag.store.DigestStore` or a plain dict."""

    def get(self, key: str) -> Digest | None: ...


@dataclass
class ChatPrompt:
    """Prompt embeddings of a chat conversation, with the keys of the digests spliced in (in prompt order)."""

    embeds: torch.Tensor  # (T, C)
    digest_keys: list[str]

    @property
    def num_positions(self) -> int:
        return self.embeds.shape[0]


@dataclass
class ChatResult:
    """One generated answer and what it cost."""

    text: str
    prompt_tokens: int  # prompt positions, digest vectors and separators included
    completion_tokens: int  # generated tokens, the end-of-turn token included
    digest_keys: list[str]  # digests the prompt held, in order: which documents the answer read
    finish_reason: str  # "stop" (end of turn) or "length" (max_new_tokens reached)


def _check_messages(messages: Any) -> list[dict[str, str]]:
    if isinstance(messages, (str, dict)) or not isinstance(messages, Sequence):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
    if not messages:
        raise ValueError("messages is empty: give at least one message")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise TypeError(f"message {i} must be a dict with str 'role' and 'content', got {m!r:.80}")
        out.append({"role": check_text(m["role"], f"the role of message {i}"), "content": m["content"]})
        check_text(m["content"], f"message {i}")
    return out


def _counting_streamer(tokenizer: Any) -> Any:
    """A TextIteratorStreamer that also counts the token ids it is given. With inputs_embeds the prompt it
    is first handed is empty, so the count is the generated tokens, end-of-turn included."""
    from transformers import TextIteratorStreamer

    class CountingStreamer(TextIteratorStreamer):
        num_tokens = 0

        def put(self, value: torch.Tensor) -> None:
            self.num_tokens += int(value.numel())
            super().put(value)

    return CountingStreamer(tokenizer, skip_prompt=False, skip_special_tokens=True)


def _stop_when(event: threading.Event) -> Any:
    """A stopping criterion that ends generation (every row) at the next token once `event` is set."""
    from transformers import StoppingCriteria

    class StopWhen(StoppingCriteria):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
            stop = torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device)
            return cast(torch.BoolTensor, stop)

    return StopWhen()


# Generate threads of the streams still open: told to stop, and waited for, when the interpreter exits (a stream
# whose consumer never closed it would otherwise still be generating, in torch, while the process shuts down).
_open_streams: set[tuple[threading.Event, threading.Thread]] = set()
_open_streams_lock = threading.Lock()


@atexit.register
def _stop_open_streams(timeout: float = 10.0) -> None:
    with _open_streams_lock:
        streams = list(_open_streams)
    for stop, _ in streams:
        stop.set()
    for _, thread in streams:
        thread.join(timeout)


class SoftPromptLM:
    """A frozen local chat LLM that reads digests (or full texts, the baseline) in its prompt.

    Args:
        llm: any transformers causal LM (frozen; never trained here).
        tokenizer: its tokenizer, with a chat template.
        compressor: the compressor whose digests it reads (also holds the learned separator
            embeddings). Needed for digests; full-text prompts work without one.
        instruction: the text before the contexts.
    """

    def __init__(
        self,
        llm: Any,
        tokenizer: Any,
        compressor: ContextCompressor | None = None,
        instruction: str = DEFAULT_INSTRUCTION,
        system: str | None = None,
    ) -> None:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat template; use a chat/instruct model")
        self.llm = llm
        self.tokenizer = tokenizer
        self.compressor = compressor
        self.instruction = instruction
        self.system = system
        self._embed = llm.get_input_embeddings()
        eos = {tokenizer.eos_token_id, *_as_list(llm.generation_config.eos_token_id)}
        turn_end = end_of_turn(tokenizer)  # what the chat template closes a turn with (<|im_end|>, <|eot_id|>...)
        if turn_end in tokenizer.get_vocab():
            eos.add(tokenizer.convert_tokens_to_ids(turn_end))
        self.eos_token_ids = sorted(e for e in eos if e is not None)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_ids[0]

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path | None = None,
        llm_name_or_path: str | Path | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        **kwargs: Any,
    ) -> SoftPromptLM:
        """Load the default LLM (SmolLM2-135M-Instruct) and the shipped compressor checkpoint, or any local LLM with
        a compressor checkpoint trained for it (see :func:`icformer_rag.load_compressor`); `kwargs` go to the
        constructor (`instruction`, `system`). The adapters' `from_default` constructors call this."""
        compressor, llm, tokenizer = load_compressor(checkpoint, llm_name_or_path, device=device, dtype=dtype)
        return cls(llm, tokenizer, compressor, **kwargs)

    @property
    def device(self) -> torch.device:
        return self._embed.weight.device

    @property
    def max_positions(self) -> int | None:
        return max_positions(self.llm)

    # ---------------------------------------------------------------------------------- prompt building
    def _text_embeds(self, text: str) -> torch.Tensor:
        """Embeddings of prompt text: rendered template text whose user and document parts went through
        `guard_text`, so that a control token typed in them reads as plain text (see `encode_text`)."""
        ids = encode_text(self.tokenizer, text)
        return self._embed(torch.tensor(ids, dtype=torch.long, device=self.device))  # (T, C)

    def _digest_embeds(self, digest: Digest) -> torch.Tensor:
        if self.compressor is None:
            raise ValueError("digests given but this SoftPromptLM has no compressor (it holds the separators)")
        if digest.fingerprint != self.compressor.fingerprint:
            raise ValueError(
                f"digest of text {digest.content_hash[:12]} was made by compressor {digest.fingerprint}, "
                f"not by this LLM's compressor {self.compressor.fingerprint}: recompress it"
            )
        if digest.embeddings.dim() != 2 or digest.embeddings.shape[1] != self._embed.embedding_dim:
            raise ValueError(
                f"digest vectors are {tuple(digest.embeddings.shape)}, but this LLM reads "
                f"{self._embed.embedding_dim}-wide embeddings"
            )
        vectors = digest.embeddings.to(self.device, self._embed.weight.dtype)
        return digest_block(self.compressor.model.special_embeddings, vectors)

    @torch.no_grad()
    def build_inputs(
        self, question: str, contexts: Sequence[Context] = (), instruction: str | None = None
    ) -> torch.Tensor:
        """Prompt embeddings (T, C) for one question over digests and/or texts."""
        if not isinstance(question, str):
            raise TypeError(f"question must be a str, got {type(question).__name__}")
        if isinstance(contexts, (str, Digest)):
            contexts = [contexts]
        for i, c in enumerate(contexts):
            if not isinstance(c, (str, Digest)):
                raise TypeError(f"context {i} is a {type(c).__name__}; give Digest objects or strings")
            if isinstance(c, str):
                check_text(c, f"context {i}")
        instruction = self.instruction if instruction is None else instruction
        # User and document text is guarded: a control token typed in it stays text (see `encode_text`).
        pieces = render_prompt(self.tokenizer, question, len(contexts), instruction, self.system, guard=True)
        texts = [guard_text(self.tokenizer, c) if isinstance(c, str) else c for c in contexts]
        if all(isinstance(c, str) for c in texts):
            # Full-text baseline: exactly the prompt a plain chat user would send, tokenized in one go.
            embeds = self._text_embeds("".join(p if isinstance(p, str) else cast(str, texts[p]) for p in pieces))
        else:
            parts = []
            for p in pieces:
                if isinstance(p, str):
                    parts.append(self._text_embeds(p))
                else:
                    c = texts[p]
                    parts.append(self._digest_embeds(c) if isinstance(c, Digest) else self._text_embeds(c))
            embeds = torch.cat(parts)
        return embeds

    def _check_length(self, length: int, settings: GenerationSettings) -> None:
        limit = self.max_positions
        if limit and length + settings.max_new_tokens > limit:
            raise ValueError(
                f"prompt of {length} positions + {settings.max_new_tokens} new tokens exceeds the LLM's "
                f"{limit} positions: pass fewer or shorter documents"
            )

    def _batch(
        self, questions: Sequence[str], contexts: Sequence[Sequence[Context]], settings: GenerationSettings
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.build_inputs(q, c) for q, c in zip(questions, contexts, strict=True)]
        return self._pad_left(rows, settings)

    def _reads_digests(self, has_digests: bool) -> str | None:
        """The reader adapter a prompt is read through: the compressor's, only when the prompt holds digests
        (full-text and plain prompts always run the LLM's own weights); None = no adapter."""
        if has_digests and self.compressor is not None:
            return self.compressor.reader_name
        return None

    def _generate(
        self, embeds: torch.Tensor, mask: torch.Tensor, settings: GenerationSettings, reader: str | None, **kw: Any
    ) -> Any:
        if settings.stop_strings:
            kw["tokenizer"] = self.tokenizer  # transformers' stop strings are matched through the tokenizer
        with adapter_scope(self.llm, reader):
            return self.llm.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                eos_token_id=self.eos_token_ids,
                pad_token_id=self.pad_token_id,
                **settings.kwargs(),
                **kw,
            )

    def _grouped(self, flags: Sequence[bool]) -> list[list[int]]:
        """Row indices (of prompts that hold digests or not) split into one batch per reader setting: an adapter
        is on or off for a whole generate call."""
        groups: dict[str | None, list[int]] = {}
        for i, f in enumerate(flags):
            groups.setdefault(self._reads_digests(f), []).append(i)
        return list(groups.values())

    # -------------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate_batch(
        self,
        questions: Sequence[str],
        contexts: Sequence[Sequence[Context]],
        settings: GenerationSettings | None = None,
    ) -> list[str]:
        """Answer several questions, each over its own contexts, in one batched generate call."""
        settings = settings or GenerationSettings()
        if not questions:
            return []
        if isinstance(questions, str):
            raise TypeError("generate_batch() takes a list of questions")
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} context lists")
        answers: list[str] = [""] * len(questions)
        flags = [any(isinstance(c, Digest) for c in _context_list(cs)) for cs in contexts]
        for group in self._grouped(flags):
            embeds, mask = self._batch([questions[i] for i in group], [contexts[i] for i in group], settings)
            out = self._generate(embeds, mask, settings, self._reads_digests(flags[group[0]]))
            for i, row in zip(group, out, strict=True):
                answers[i] = self.tokenizer.decode(row, skip_special_tokens=True).strip()
        return answers

    def generate(
        self,
        question: str,
        contexts: Sequence[Context] | Context | None = (),
        settings: GenerationSettings | None = None,
    ) -> str:
        """Answer one question over digests (or texts, for the baseline)."""
        return self.generate_batch([question], [_context_list(contexts)], settings)[0]

    def stream(
        self,
        question: str,
        contexts: Sequence[Context] | Context | None = (),
        settings: GenerationSettings | None = None,
    ) -> Generator[str, None, None]:
        """Yield the answer in text chunks as they are generated."""
        settings = settings or GenerationSettings()
        contexts = _context_list(contexts)
        embeds, mask = self._batch([question], [contexts], settings)
        reader = self._reads_digests(any(isinstance(c, Digest) for c in contexts))
        yield from self._stream_embeds(embeds, mask, settings, reader=reader)

    def _stream_embeds(
        self,
        embeds: torch.Tensor,
        mask: torch.Tensor,
        settings: GenerationSettings,
        token_counts: list[int] | None = None,
        reader: str | None = None,
    ) -> Generator[str, None, None]:
        """Generate in a worker thread and yield text chunks; errors resurface in the caller's thread. When
        the stream ends, the number of generated tokens is appended to `token_counts` (if given).

        A consumer that leaves early (breaks out of its loop, closes the stream, drops it, or fails) stops the
        generation at the next token, and the thread is waited for before the stream is closed."""
        from transformers import StoppingCriteriaList

        streamer = _counting_streamer(self.tokenizer)
        errors: list[BaseException] = []
        stop = threading.Event()  # set when the consumer is gone

        def run() -> None:
            try:
                with torch.no_grad():
                    criteria = StoppingCriteriaList([_stop_when(stop)])
                    self._generate(embeds, mask, settings, reader, streamer=streamer, stopping_criteria=criteria)
            except BaseException as err:  # surfaced in the caller's thread below
                errors.append(err)
                streamer.end()

        thread = threading.Thread(target=run, name="icformer-stream", daemon=True)
        with _open_streams_lock:
            _open_streams.add((stop, thread))
        try:
            thread.start()
            yield from (chunk for chunk in streamer if chunk)
        finally:  # also on GeneratorExit: the consumer closed the stream (or it was garbage-collected)
            stop.set()
            if thread.ident is not None:  # started
                thread.join()
            with _open_streams_lock:
                _open_streams.discard((stop, thread))
        if errors:
            raise errors[0]
        if token_counts is not None:
            token_counts.append(streamer.num_tokens)

    def answer(
        self,
        question: str,
        documents: Sequence[str],
        full_context: bool = False,
        settings: GenerationSettings | None = None,
    ) -> str:
        """Compress `documents` (unless `full_context`) and answer `question` over them."""
        if isinstance(documents, str):
            documents = [documents]
        if full_context:
            return self.generate(question, list(documents), settings)
        if self.compressor is None:
            raise ValueError("answer() from digests needs a compressor")
        return self.generate(question, self.compressor.compress(list(documents)), settings)

    def position_ids(self, text: str, digests: DigestSource) -> list[int]:
        """Token ids of `text` as the LLM reads it, for counting: its guarded text tokens, and each digest marker as
        len(digest) + 2 placeholder ids (BEGIN, the vectors, END). ValueError for a marker whose digest `digests`
        lacks. What the adapters' token counts (LangChain's get_num_tokens, LlamaIndex's tokenizer) are made of."""
        from .store import marker_for, split_markers

        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        tok = self.tokenizer
        placeholder = next((i for i in (tok.unk_token_id, tok.pad_token_id, tok.eos_token_id) if i is not None), 0)
        ids: list[int] = []
        for piece in split_markers(text):
            if isinstance(piece, str):
                ids += encode_text(tok, guard_text(tok, piece))
                continue
            digest = digests.get(piece[0])
            if digest is None:
                raise ValueError(f"no digest for marker {marker_for(piece[0])} in the digest store: cannot count it")
            ids += [placeholder] * (len(digest) + 2)  # BEGIN, the digest vectors, END
        return ids

    # ------------------------------------------------------------------------- chat messages with markers
    @torch.no_grad()
    def build_chat_inputs(self, messages: Sequence[dict[str, str]], digests: DigestSource | None = None) -> ChatPrompt:
        """Prompt embeddings for chat `messages` whose contents may hold digest markers (:func:`marker_for`).

        The chat template is applied once, to the messages as given (markers included, as plain text); the
        rendered text is then cut at the markers, each text piece embedded, and each marker replaced by its
        digest between the learned BEGIN/END embeddings, exactly as :meth:`build_inputs` places digests. Only
        markers made in this process (by an adapter's compressor, or :func:`marker_for`) are read as digests:
        marker-looking text that came from anywhere else (typed in a question, in a document read as full text, in
        metadata a prompt template formats, made by another process or an earlier run) is tokenized as the text it
        is, whatever `digests` holds, and a warning is logged that names no key. A genuine marker whose digest
        `digests` lacks raises ValueError naming it; with no markers this is the plain chat prompt, tokenized in one
        go.
        """
        messages = _check_messages(messages)
        # Roles and contents are guarded: a control token typed in them stays text (see `encode_text`).
        guarded = [{k: guard_text(self.tokenizer, v) for k, v in m.items()} for m in messages]
        text = self.tokenizer.apply_chat_template(guarded, add_generation_prompt=True, tokenize=False)
        foreign = count_foreign_markers(text)
        if foreign:
            # The same count whatever the store holds: no signal about its contents. No key or text is logged.
            _log.warning(
                "%d marker-looking text(s) in the chat messages were not made in this process and are read as text "
                "(markers are only valid in the process whose compressor made them)",
                foreign,
            )
        pieces = split_markers(text)
        keys = [p[0] for p in pieces if isinstance(p, tuple)]
        if not keys:
            return ChatPrompt(self._text_embeds(text), [])
        if digests is None:
            raise ValueError(f"the messages hold digest marker {marker_for(keys[0])} but no digest store was given")
        parts = []
        for p in pieces:
            if isinstance(p, str):
                parts.append(self._text_embeds(p))
                continue
            digest = digests.get(p[0])
            if digest is None:
                raise ValueError(
                    f"no digest for marker {marker_for(p[0])} in the digest store: compress its "
                    "document into this store first (or pass the store that holds it)"
                )
            parts.append(self._digest_embeds(digest))
        return ChatPrompt(torch.cat(parts), keys)

    def _pad_left(
        self, rows: Sequence[torch.Tensor], settings: GenerationSettings
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embedding rows (positions x hidden) as one left-padded batch and its attention mask, after
        checking that the longest row leaves room for `settings.max_new_tokens`."""
        self._check_length(max(r.shape[0] for r in rows), settings)
        return pad_rows([r.to(self.device) for r in rows], "left")

    @torch.no_grad()
    def generate_prompts(
        self, prompts: Sequence[ChatPrompt], settings: GenerationSettings | None = None
    ) -> list[ChatResult]:
        """Answer several built chat prompts in one batched generate call."""
        settings = settings or GenerationSettings()
        if not prompts:
            return []
        self._check_length(max(p.num_positions for p in prompts), settings)  # before any group generates
        rows: list[list[int]] = [[] for _ in prompts]
        flags = [bool(p.digest_keys) for p in prompts]
        for group in self._grouped(flags):
            embeds, mask = self._pad_left([prompts[i].embeds for i in group], settings)
            out = self._generate(embeds, mask, settings, self._reads_digests(flags[group[0]]))
            for i, row in zip(group, out.tolist(), strict=True):
                rows[i] = row
        eos = set(self.eos_token_ids)
        results = []
        for prompt, row in zip(prompts, rows, strict=True):
            # A row that ended early is padded after its end-of-turn token: count up to and including it.
            end = next((i + 1 for i, t in enumerate(row) if t in eos), None)
            length = end or len(row)
            text = self.tokenizer.decode(row[:length], skip_special_tokens=True)
            stopped = end is not None
            if not stopped and any(s in text for s in settings.stop_strings):
                # Ended at a stop string: a row that stopped before the others of its batch is padded after it.
                stopped = True
                while length and row[length - 1] == self.pad_token_id:
                    length -= 1
            results.append(
                ChatResult(
                    text=text.strip(),
                    prompt_tokens=prompt.num_positions,
                    completion_tokens=length,
                    digest_keys=list(prompt.digest_keys),
                    finish_reason="stop" if stopped else "length",
                )
            )
        return results

    def generate_chat_batch(
        self,
        conversations: Sequence[Sequence[dict[str, str]]],
        digests: DigestSource | None = None,
        settings: GenerationSettings | None = None,
    ) -> list[ChatResult]:
        """Answer several chat conversations (markers allowed) in one batched generate call."""
        if isinstance(conversations, (str, dict)) or not isinstance(conversations, Sequence):
            raise TypeError("generate_chat_batch() takes a list of conversations (lists of messages)")
        return self.generate_prompts([self.build_chat_inputs(c, digests) for c in conversations], settings)

    def generate_chat(
        self,
        messages: Sequence[dict[str, str]],
        digests: DigestSource | None = None,
        settings: GenerationSettings | None = None,
    ) -> ChatResult:
        """Answer one chat conversation whose messages may hold digest markers."""
        return self.generate_chat_batch([messages], digests, settings)[0]

    def stream_prompt(
        self, prompt: ChatPrompt, settings: GenerationSettings | None = None, token_counts: list[int] | None = None
    ) -> Generator[str, None, None]:
        """Yield the answer to a built chat prompt in text chunks as they are generated. When the stream
        ends, the number of generated tokens is appended to `token_counts` (if given)."""
        settings = settings or GenerationSettings()
        embeds, mask = self._pad_left([prompt.embeds], settings)
        reader = self._reads_digests(bool(prompt.digest_keys))
        yield from self._stream_embeds(embeds, mask, settings, token_counts, reader=reader)

    def stream_chat(
        self,
        messages: Sequence[dict[str, str]],
        digests: DigestSource | None = None,
        settings: GenerationSettings | None = None,
    ) -> Generator[str, None, None]:
        """Yield the answer to chat `messages` (markers allowed) in text chunks as they are generated."""
        return self.stream_prompt(self.build_chat_inputs(messages, digests), settings)


def _context_list(contexts: Context | Sequence[Context] | None) -> list[Context]:
    """One question's contexts as a list: a single text or Digest becomes a one-item list, None no context."""
    if contexts is None:
        return []
    if isinstance(contexts, (str, Digest)):
        return [contexts]
    if not isinstance(contexts, Iterable):
        raise TypeError(f"contexts must be a text, a Digest or a list of them, not {type(contexts).__name__}")
    return list(contexts)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
