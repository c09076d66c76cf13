"""Training objectives. Each builds the frozen LLM's input embeddings around digests and returns a loss
over target tokens only; gradients reach the compressor through the LLM without touching its weights.

Layouts (one row per window, no padding: a batch shares one window length):
    auto-encoding:       [BEGIN] digests [END] [AE] w_0 ... w_{n-1}      predict w_0..w_{n-1}
    language modelling:  [BEGIN] digests [END] c_0 ... c_{l-1}           predict the continuation c
    instruction:         chat prompt with [BEGIN] digests [END] spliced in, then the answer tokens
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..generation import render_prompt
from ..modeling import ICFormer
from .readout import ReadoutHead, ReadoutOutput


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, mean over target tokens
    num_tokens: int
    correct: int  # greedy next-token hits on targets (a cheap accuracy to log)
    readout: ReadoutOutput | None = None  # the auxiliary readout loss, when a head was given (not in `loss`)


def core(model: Any) -> ICFormer:
    """The ICFormer inside a DDP and/or torch.compile wrapper (their forward is what trains)."""
    while isinstance(getattr(model, "module", None), torch.nn.Module) or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def _special(model: Any, index: int, batch: int, dtype: torch.dtype) -> torch.Tensor:
    return core(model).special_embeddings[index].to(dtype).expand(batch, 1, -1)  # (B, 1, C)


def target_loss(
    llm: Any,
    inputs_embeds: torch.Tensor,
    targets: torch.Tensor,
    attention_mask=None,
    kl_teacher_logits: torch.Tensor | None = None,
    kl_weight: float = 0.0,
) -> LossOutput:
    """Cross-entropy of `targets` (B, T) given `inputs_embeds` (B, T, C), where targets[b, t] is the token
    to predict at position t and -100 marks positions without a target.

    Logits are only computed where there is a target: over this LLM's 49k-word vocabulary the LM head
    would otherwise cost as much as the prefix of digests.
    """
    hidden = llm.get_decoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
    where = targets != -100
    h = hidden[where]  # (K, C)
    logits = llm.get_output_embeddings()(h).float()  # (K, V)
    tgt = targets[where]
    loss = F.cross_entropy(logits, tgt)
    if kl_teacher_logits is not None and kl_weight > 0:
        teacher = kl_teacher_logits.float().log_softmax(-1)
        kl = F.kl_div(logits.log_softmax(-1), teacher, log_target=True, reduction="batchmean")
        loss = loss + kl_weight * kl
    correct = int((logits.argmax(-1) == tgt).sum())
    return LossOutput(loss=loss, num_tokens=int(tgt.numel()), correct=correct)


def _readout(readout: ReadoutHead | None, digests: torch.Tensor, window_ids: torch.Tensor, llm: Any):
    return None if readout is None else readout(digests, window_ids, llm.get_input_embeddings().weight)


def autoencoding_loss(
    model: Any, llm: Any, window_ids: torch.Tensor, readout: ReadoutHead | None = None
) -> LossOutput:
    """The LLM reconstructs each window (B, n) from its digests after the learned AE token.

    With a `readout` head, also returns its loss on the same digests (see :mod:`.readout`); the caller
    weights and adds it.
    """
    B, n = window_ids.shape
    embed = llm.get_input_embeddings()
    dtype = embed.weight.dtype
    ctx = embed(window_ids)  # (B, n, C)
    m = core(model).config.digests_for(n)
    raw = model(ctx, None, num_digests=m)  # (B, m, C)
    digests = raw.to(dtype)
    inputs = torch.cat(
        (
            _special(model, ICFormer.SPECIAL_BEGIN, B, dtype),
            digests,
            _special(model, ICFormer.SPECIAL_END, B, dtype),
            _special(model, ICFormer.SPECIAL_AE, B, dtype),
            ctx[:, :-1],
        ),
        dim=1,
    )  # (B, m + 3 + n - 1, C): the last window token is only ever a target
    targets = torch.full(inputs.shape[:2], -100, dtype=torch.long, device=window_ids.device)
    targets[:, m + 2 :] = window_ids  # the AE token predicts w_0, w_t predicts w_{t+1}
    out = target_loss(llm, inputs, targets)
    out.readout = _readout(readout, raw, window_ids, llm)
    return out


def lm_loss(
    model: Any,
    llm: Any,
    window_ids: torch.Tensor,
    continuation_ids: torch.Tensor,
    readout: ReadoutHead | None = None,
) -> LossOutput:
    """The LLM continues the text after the digests of the window (B, n) with the next tokens (B, l)."""
    B, n = window_ids.shape
    embed = llm.get_input_embeddings()
    dtype = embed.weight.dtype
    m = core(model).config.digests_for(n)
    raw = model(embed(window_ids), None, num_digests=m)
    digests = raw.to(dtype)
    inputs = torch.cat(
        (
            _special(model, ICFormer.SPECIAL_BEGIN, B, dtype),
            digests,
            _special(model, ICFormer.SPECIAL_END, B, dtype),
            embed(continuation_ids[:, :-1]),
        ),
        dim=1,
    )  # (B, m + 2 + l - 1, C)
    targets = torch.full(inputs.shape[:2], -100, dtype=torch.long, device=window_ids.device)
    targets[:, m + 1 :] = continuation_ids  # [END] predicts c_0
    out = target_loss(llm, inputs, targets)
    out.readout = _readout(readout, raw, window_ids, llm)
    return out


@dataclass
class InstructExample:
    """One tokenized instruction example: its prompt as text-id pieces with a context slot, and answer ids."""

    pieces: list[list[int] | int]  # token ids, or the context index 0
    context_ids: list[int]
    answer_ids: list[int]


def tokenize_instruct(
    tokenizer: Any, context: str, prompt: str, answer: str, window_tokens: int, end_token: str = "<|im_end|>"
) -> InstructExample:
    """Tokenize one (context, prompt, answer) with the same chat layout SoftPromptLM uses at inference."""
    pieces: list[list[int] | int] = []
    for p in render_prompt(tokenizer, prompt, 1):
        pieces.append(p if isinstance(p, int) else tokenizer(p, add_special_tokens=False)["input_ids"])
    answer_ids = tokenizer(answer.strip() + end_token, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    return InstructExample(pieces=pieces, context_ids=ctx, answer_ids=answer_ids)


def tokenize_instruct_batch(
    tokenizer: Any,
    contexts: Sequence[str],
    prompts: Sequence[str],
    answers: Sequence[str],
    end_token: str = "<|im_end|>",
) -> list[InstructExample]:
    """:func:`tokenize_instruct` for many records, with one batched tokenizer call per field (fast)."""
    rendered = [render_prompt(tokenizer, p, 1) for p in prompts]
    flat = [piece for pieces in rendered for piece in pieces if isinstance(piece, str)]
    flat_ids = iter(tokenizer(flat, add_special_tokens=False)["input_ids"]) if flat else iter([])
    ctx_ids = tokenizer(list(contexts), add_special_tokens=False, verbose=False)["input_ids"]
    ans_ids = tokenizer([a.strip() + end_token for a in answers], add_special_tokens=False)["input_ids"]
    out = []
    for pieces, c, a in zip(rendered, ctx_ids, ans_ids, strict=True):
        tokenized: list[list[int] | int] = [p if isinstance(p, int) else next(flat_ids) for p in pieces]
        out.append(InstructExample(pieces=tokenized, context_ids=c, answer_ids=a))
    return out


def instruct_loss(model: Any, llm: Any, examples: Sequence[InstructExample]) -> LossOutput:
    """Loss on the answer tokens of chat prompts whose context is given as digests.

    Contexts may span several windows; all windows of the batch are compressed in one padded pass.
    Rows are right-padded; padding is masked out of attention and loss.
    """
    from ..windows import split_windows

    device = core(model).digest_embeddings.device
    embed = llm.get_input_embeddings()
    dtype = embed.weight.dtype
    cfg = core(model).config
    windows = [(i, w) for i, ex in enumerate(examples) for w in split_windows(ex.context_ids, cfg.window_tokens)]
    longest = max((len(w) for _, w in windows), default=1)
    ids = torch.zeros(len(windows), longest, dtype=torch.long, device=device)
    mask = torch.zeros(len(windows), longest, dtype=torch.bool, device=device)
    for r, (_, w) in enumerate(windows):
        ids[r, : len(w)] = torch.tensor(w, device=device)
        mask[r, : len(w)] = True
    counts = [cfg.digests_for(len(w)) for _, w in windows]
    digests = model(embed(ids), mask, num_digests=max(counts, default=1)).to(dtype) if windows else None
    per_example: list[list[torch.Tensor]] = [[] for _ in examples]
    for r, (i, _) in enumerate(windows):
        per_example[i].append(digests[r, : counts[r]])

    special = core(model).special_embeddings
    begin = special[ICFormer.SPECIAL_BEGIN : ICFormer.SPECIAL_BEGIN + 1].to(dtype)
    end = special[ICFormer.SPECIAL_END : ICFormer.SPECIAL_END + 1].to(dtype)
    rows, row_targets = [], []
    for ex, parts in zip(examples, per_example, strict=True):
        seq, tgt = [], []
        for p in ex.pieces:
            if isinstance(p, int):
                block = torch.cat([begin, *parts, end])
            else:
                block = embed(torch.tensor(p, dtype=torch.long, device=device))
            seq.append(block)
            tgt.append(torch.full((block.shape[0],), -100, dtype=torch.long, device=device))
        answer = torch.tensor(ex.answer_ids, dtype=torch.long, device=device)
        seq.append(embed(answer[:-1]))
        tgt.append(torch.full((len(ex.answer_ids) - 1,), -100, dtype=torch.long, device=device))
        t = torch.cat(tgt)
        t[-len(ex.answer_ids) :] = answer  # the last prompt position predicts the first answer token
        rows.append(torch.cat(seq))
        row_targets.append(t)
    T = max(r.shape[0] for r in rows)
    B, C = len(rows), rows[0].shape[1]
    inputs = torch.zeros(B, T, C, dtype=dtype, device=device)
    targets = torch.full((B, T), -100, dtype=torch.long, device=device)
    attn = torch.zeros(B, T, dtype=torch.long, device=device)
    for b, (r, t) in enumerate(zip(rows, row_targets, strict=True)):
        inputs[b, : r.shape[0]] = r
        targets[b, : t.shape[0]] = t
        attn[b, : r.shape[0]] = 1
    return target_loss(llm, inputs, targets, attention_mask=attn)
