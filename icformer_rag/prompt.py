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
"""

from __future__ import annotations

import re
from typing import Any

import torch

DEFAULT_INSTRUCTION = "Answer the question using the context below."
_MARK = "<<ICFORMER_CONTEXT_{}>>"
_MARK_RE = re.compile(r"<<ICFORMER_CONTEXT_(\d+)>>")
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


def render_prompt(
    tokenizer: Any, question: str, num_contexts: int, instruction: str | None = None, system: str | None = None
) -> list[str | int]:
    """The chat prompt as text pieces with context indices between them (ints mark where context i goes)."""
    # A marker typed by the user would be taken for a context slot.
    for what, value in (("question", question), ("instruction", instruction), ("system prompt", system)):
        found = _MARK_RE.search(value) if isinstance(value, str) else None
        if found:
            raise ValueError(f"the {what} contains {found.group(0)!r}, a marker reserved for contexts")
    user = (instruction if instruction is not None else DEFAULT_INSTRUCTION).strip()
    if num_contexts:
        user += "\n\n" + "\n".join(_MARK.format(i) for i in range(num_contexts))
    user += f"\n\nQuestion: {question.strip()}" if question.strip() else ""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    pieces: list[str | int] = []
    pos = 0
    for m in _MARK_RE.finditer(text):
        pieces.append(text[pos : m.start()])
        pieces.append(int(m.group(1)))
        pos = m.end()
    pieces.append(text[pos:])
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
