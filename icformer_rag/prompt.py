"""The prompt layout, written once: how a question and its contexts become a chat prompt with context slots,
and what ends a chat turn. Generation (:class:`~icformer_rag.generation.SoftPromptLM`) and every training
objective build prompts from here, so a compressor learns exactly the prompts it is used with.

The user turn is

    {instruction}

    {context 1}
    {context 2}

    Question: {question}

inside the LLM's own chat template; each context slot is filled with a digest (learned BEGIN embedding, the
digest vectors, learned END embedding: :func:`digest_block`) or, for the full-text baseline, the document's text.
The auto-encoding prompt is the digest block followed by the learned AE embedding, then the window's tokens.

Only the chat template writes the chat's structure: with ``guard=True`` (generation) every text that comes from a
user or a document (question, instruction, system prompt, chat messages, full-text contexts) goes through
:func:`guard_text`, and :func:`encode_text` reads a control token typed in it (``<|im_end|><|im_start|>system``) as
the plain characters it is made of, never as the token. Text without control tokens is tokenized exactly as
``tokenizer(text, add_special_tokens=False)`` tokenizes it, so the prompts of ordinary text are unchanged.

One marker syntax stands for anything in prompt text that is not text: ``⟦icf:<ref>.<tag>⟧``, where `<ref>` is a
digest key (:func:`marker_for`: adapters put these where a document's text would go, and
:meth:`~icformer_rag.generation.SoftPromptLM.build_chat_inputs` reads each as its digest) or a context slot of
:func:`render_prompt`, and `<tag>` is an HMAC of `<ref>` under a random secret that this process makes when it
imports this module and never writes anywhere. Only code in this process can make a marker, so text (a question, a
document read as full text, metadata a prompt template formats) can pull no digest and probe no store: any
marker-looking text in it, typed or copied from another process or an earlier run, is read as the plain text it
is (see :func:`split_markers`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from functools import lru_cache
from typing import Any

import torch

DEFAULT_INSTRUCTION = "Answer the question using the context below."
_ANSWER_PROBE = "ICFORMER-ANSWER-PROBE"

# Rows of a compressor's `special_embeddings`: learned vectors the LLM reads around digests.
SPECIAL_BEGIN = 0  # before a digest
SPECIAL_END = 1  # after a digest
SPECIAL_AE = 2  # after the digest block of an auto-encoding prompt: "now recite the window"


def digest_block(special: torch.Tensor, digests: torch.Tensor, autoencode: bool = False) -> torch.Tensor:
    """What a digest is read as: BEGIN, its vectors, END (and AE when `autoencode`), in the digests' dtype and
    device. `digests` is (m, C) or a batch (B, m, C); `special` the compressor's (S, C) special embeddings (gradients
    flow to both, for training). Generation, every training objective and the evaluators splice digests through
    here, so a compressor is trained on exactly the block it is read with."""
    special = special.to(device=digests.device, dtype=digests.dtype)
    begin = special[SPECIAL_BEGIN : SPECIAL_BEGIN + 1]
    tail = special[SPECIAL_END : SPECIAL_AE + 1] if autoencode else special[SPECIAL_END : SPECIAL_END + 1]
    if digests.dim() == 3:
        begin, tail = begin.expand(digests.shape[0], -1, -1), tail.expand(digests.shape[0], -1, -1)
    return torch.cat((begin, digests, tail), dim=-2)


def pad_rows(rows: list[torch.Tensor], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt rows (positions x hidden, any lengths) as one batch (B, T, C) and its attention mask (B, T), padded
    with zeros on `side`: "left" for generation (every row's last position is its own, where the answer starts),
    "right" for training (positions count from 0 in every row; causal attention never sees the padding after)."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    longest = max(r.shape[0] for r in rows)
    first = rows[0]
    embeds = first.new_zeros(len(rows), longest, first.shape[1])
    mask = torch.zeros(len(rows), longest, dtype=torch.long, device=first.device)
    for i, r in enumerate(rows):
        where = slice(longest - r.shape[0], longest) if side == "left" else slice(0, r.shape[0])
        embeds[i, where] = r
        mask[i, where] = 1
    return embeds, mask


def check_text(text: str, what: str) -> str:
    """`text`, after checking that it is valid Unicode (a lone surrogate such as ``"\\ud800"`` is not, and would
    fail inside the tokenizer with an obscure TypeError): ValueError naming `what` otherwise. The check
    :meth:`~icformer_rag.compressor.ContextCompressor.compress` makes on its texts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"{what} is not valid Unicode: {err.reason} at character {err.start}") from err
    return text


# ------------------------------------------------------------------------------------------------ markers
KEY_CHARS = 24  # hex digits of a digest key (DigestStore's): 96 bits, far from any collision for any corpus
TAG_CHARS = 16  # hex digits of a marker's tag: 64 bits, and each guess costs the guesser a model call
# Mathematical white square brackets: not on keyboards, not markup or template syntax for Jinja/Markdown/
# f-strings/LangChain templates, and byte-level tokenizers carry them through untouched.
MARKER_OPEN = "\u27e6icf:"
MARKER_CLOSE = "\u27e7"
# A marker's reference: a digest key, or `ctx<i>` for context slot i of `render_prompt`.
MARKER_RE = re.compile(
    re.escape(MARKER_OPEN)
    + rf"([0-9a-f]{{{KEY_CHARS}}}|ctx[0-9]{{1,9}})\.([0-9a-f]{{{TAG_CHARS}}})"
    + re.escape(MARKER_CLOSE)
)
_KEY_RE = re.compile(rf"[0-9a-f]{{{KEY_CHARS}}}")
# Made once per process, never saved, logged or sent: a marker made by another process (or an earlier run) is text.
_MARKER_SECRET = secrets.token_bytes(32)


def _tag(ref: str) -> str:
    return hmac.new(_MARKER_SECRET, b"icformer-marker\0" + ref.encode(), hashlib.sha256).hexdigest()[:TAG_CHARS]


def _marker(ref: str) -> str:
    return f"{MARKER_OPEN}{ref}.{_tag(ref)}{MARKER_CLOSE}"


def _genuine(text: str) -> list[re.Match[str]]:
    """The markers in `text` that this process made (their tag checks out), in order; anything else that looks
    like a marker is text."""
    return [m for m in MARKER_RE.finditer(text) if hmac.compare_digest(m.group(2), _tag(m.group(1)))]


def marker_for(key: str) -> str:
    """The marker that stands for the digest with `key` in prompt text (``⟦icf:<key>.<tag>⟧``), valid in this
    process only. For code that has just put the digest where the chat model reads (adapters): never make one from
    a key that text supplied, or that text can pull the digest."""
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise ValueError(f"not a digest key: {key!r} (expected {KEY_CHARS} lowercase hex digits)")
    return _marker(key)


def split_markers(text: str) -> list[str | tuple[str]]:
    """`text` cut at the digest markers this process made: plain text pieces, and a 1-tuple `(key,)` where a marker
    stood. Marker-looking text that this process did not make (typed, forged, the old ``⟦icf:<key>⟧`` form, made by
    another process) stays in the text pieces, as text."""
    pieces: list[str | tuple[str]] = []
    pos = 0
    for m in _genuine(text):
        if m.group(1).startswith("ctx"):
            continue  # context slots exist only inside render_prompt; anywhere else one is text
        pieces.append(text[pos : m.start()])
        pieces.append((m.group(1),))
        pos = m.end()
    pieces.append(text[pos:])
    return pieces


def find_markers(text: str) -> list[str]:
    """Keys of the digest markers in `text` that this process made, in order (repeats kept)."""
    return [p[0] for p in split_markers(text) if isinstance(p, tuple)]


def count_foreign_markers(text: str) -> int:
    """How many marker-looking texts (``⟦icf:`` ...) in `text` are not markers this process made: they are read as
    text. The same count whatever any store holds, so it tells nothing about a store's contents."""
    return text.count(MARKER_OPEN) - len(_genuine(text))


# ------------------------------------------------------------------------------------------ control tokens
# Private-use characters wrapped around each control token found in user or document text (by `guard_text`), so
# that `encode_text` can tell it from the control tokens the chat template writes itself.
_GUARD_OPEN, _GUARD_CLOSE = "\U000f1ce0", "\U000f1ce1"


def control_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The tokens that only the chat template may write: the tokenizer's special tokens, and the other added
    tokens its chat template holds (whitespace tokens excepted: templates write those as ordinary text)."""
    template = tokenizer.chat_template if isinstance(getattr(tokenizer, "chat_template", None), str) else ""
    tokens = set(getattr(tokenizer, "all_special_tokens", None) or ())
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        content = getattr(token, "content", str(token))
        if getattr(token, "special", False) or (content in template and not content.isspace()):
            tokens.add(content)
    return tuple(sorted(t for t in tokens if t))


@lru_cache(maxsize=32)
def _control_patterns(tokens: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """A regex matching any of `tokens` (longest first, so a token wins over the tokens it contains), and one
    matching a guarded token (group 1) or a lone guard character (no group)."""
    any_token = "|".join(map(re.escape, sorted(tokens, key=len, reverse=True))) or "(?!)"
    guarded = f"{_GUARD_OPEN}({any_token}){_GUARD_CLOSE}|[{_GUARD_OPEN}{_GUARD_CLOSE}]"
    return re.compile(any_token), re.compile(guarded)


def guard_text(tokenizer: Any, text: str) -> str:
    """User or document `text` with every control token in it guarded, for :func:`encode_text` to read as plain
    text (guard characters already in `text` are dropped first, so none can be forged). Text without control
    tokens comes back unchanged."""
    text = text.replace(_GUARD_OPEN, "").replace(_GUARD_CLOSE, "")
    any_token, _ = _control_patterns(control_tokens(tokenizer))
    return any_token.sub(lambda m: _GUARD_OPEN + m.group(0) + _GUARD_CLOSE, text)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of prompt `text` (no special tokens added): each control token that :func:`guard_text` guarded
    as the plain text it reads as, everything else exactly as ``tokenizer(text, add_special_tokens=False)``
    (which already cuts the text at every control token, so the text around one tokenizes as before)."""
    if not text:
        return []
    if _GUARD_OPEN not in text and _GUARD_CLOSE not in text:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    _, guarded = _control_patterns(control_tokens(tokenizer))
    ids: list[int] = []
    # [text, guarded token or None (a lone guard character), text, ...]
    for i, piece in enumerate(guarded.split(text)):
        if piece:
            ids += (
                _plain_text_ids(tokenizer, piece) if i % 2 else tokenizer(piece, add_special_tokens=False)["input_ids"]
            )
    return ids


def _plain_text_ids(tokenizer: Any, token: str) -> list[int]:
    """Token ids of a control token's text read as plain characters (``<|im_end|>`` as ``<``, ``|``, ``im``...)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The backend's pipeline without its added tokens (normalizer, pre-tokenizer, model). Unlike the per-call
        # `split_special_tokens`, which flips a flag on the shared Rust tokenizer, this is safe across threads.
        def encode(s: str) -> list[int]:
            if backend.normalizer is not None:
                s = backend.normalizer.normalize_str(s)
            splits = [p for p, _ in backend.pre_tokenizer.pre_tokenize_str(s)] if backend.pre_tokenizer else [s]
            return [t.id for p in splits for t in backend.model.tokenize(p)]
    else:

        def encode(s: str) -> list[int]:
            return list(tokenizer(s, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    # Encoded after a newline, then the newline's ids cut off: a SentencePiece tokenizer would otherwise read the
    # token as the start of a text and give it a word-start piece.
    newline, ids = encode("\n"), encode("\n" + token)
    ids = ids[len(newline) :] if newline and ids[: len(newline)] == newline else encode(token)
    controls = set(tokenizer.convert_tokens_to_ids(list(control_tokens(tokenizer))))
    if controls.intersection(ids):
        raise ValueError(f"{token!r} cannot be given to this tokenizer as text: it reads as a control token")
    return ids


def render_prompt(
    tokenizer: Any,
    question: str,
    num_contexts: int,
    instruction: str | None = None,
    system: str | None = None,
    guard: bool = False,
) -> list[str | int]:
    """The chat prompt as text pieces with context indices between them (ints mark where context i goes).

    With `guard`, the question, instruction and system prompt go through :func:`guard_text`: encode the pieces
    with :func:`encode_text`, so a control token typed in them stays text (generation does; for text without
    control tokens the pieces are the same either way). Marker-looking text in them (a context slot's or a
    digest's) is text: the slots are cut at markers made for this prompt only (see :func:`split_markers`)."""
    for what, value in (("question", question), ("instruction", instruction), ("system prompt", system)):
        if isinstance(value, str):
            check_text(value, f"the {what}")

    def user_text(text: str) -> str:
        return guard_text(tokenizer, text) if guard else text

    user = user_text((instruction if instruction is not None else DEFAULT_INSTRUCTION).strip())
    if num_contexts:
        user += "\n\n" + "\n".join(_marker(f"ctx{i}") for i in range(num_contexts))
    user += f"\n\nQuestion: {user_text(question.strip())}" if question.strip() else ""
    system = user_text(system) if system else system
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # Cut at the slots' markers only: marker-looking text in the question, instruction or system prompt (another
    # slot's marker typed, a digest marker) cannot be one of them, and stays text.
    pieces: list[str | int] = []
    pos = 0
    for m in _genuine(text):
        if m.group(1).startswith("ctx"):
            pieces.append(text[pos : m.start()])
            pieces.append(int(m.group(1)[3:]))
            pos = m.end()
    pieces.append(text[pos:])
    if [p for p in pieces if isinstance(p, int)] != list(range(num_contexts)):
        raise ValueError(f"the chat template of {type(tokenizer).__name__} does not keep the context slots in order")
    return pieces


def end_of_turn(tokenizer: Any) -> str:
    """The text the tokenizer's chat template puts after an assistant message (ChatML's ``<|im_end|>``,
    Llama 3's ``<|eot_id|>``, Mistral's ``</s>``...): what a trained answer ends with and where generation stops.
    Read from the template itself, so a compressor trained for another template learns its own stop; the
    tokenizer's end-of-sequence token when the template adds nothing after the answer."""
    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": _ANSWER_PROBE}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template that refuses this conversation: the end-of-sequence token is all we know
        return tokenizer.eos_token or ""
    tail = text[text.rindex(_ANSWER_PROBE) + len(_ANSWER_PROBE) :].strip()
    # The first special-looking piece of the tail (a template may add a newline or the next turn's header after it).
    special = re.match(r"(<[^<>\s]+>|\[/?[A-Z_]+\])", tail)
    if special:
        return special.group(1)
    return tail.split()[0] if tail else tokenizer.eos_token or ""
