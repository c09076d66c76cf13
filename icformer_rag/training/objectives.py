"""Training objectives. Each builds the frozen LLM's input embeddings around digests and returns a loss
over target tokens only; gradients reach the compressor through the LLM without touching its weights.

Layouts (one row per window, no padding: a batch shares one window length):
    auto-encoding:       [BEGIN] digests [END] [AE] w_0 ... w_{n-1}      predict w_0..w_{n-1}
    language modelling:  [BEGIN] digests [END] c_0 ... c_{l-1}           predict the continuation c
    instruction:         chat prompt with [BEGIN] digests [END] spliced in, then the answer tokens

Instruction steps may also distil from a teacher: the same frozen LLM reading the context's full text in the
prompt (the full-text baseline of :class:`~icformer_rag.generation.SoftPromptLM`), see :func:`teacher_logits`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..llm import max_positions
from ..prompt import digest_block, end_of_turn, pad_rows, render_prompt
from ..reader import adapter_scope
from .readout import ReadoutHead, ReadoutOutput


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar to optimise: mean cross-entropy over target tokens (+ kl_weight * kl)
    num_tokens: int
    correct: int  # greedy next-token hits on targets (a cheap accuracy to log)
    readout: ReadoutOutput | None = None  # the auxiliary readout loss, when a head was given (not in `loss`)
    ce: torch.Tensor | None = None  # the cross-entropy part of `loss`, detached (set by target_loss; logged)
    kl: torch.Tensor | None = None  # KL(teacher || student) per target token, detached, when distilling


def core(model: Any) -> Any:
    """The compressor module (ICFormer or LLMEncoder) inside a DDP and/or torch.compile wrapper (whose forward
    is what trains)."""
    while isinstance(getattr(model, "module", None), torch.nn.Module) or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def target_loss(
    llm: Any,
    inputs_embeds: torch.Tensor,
    targets: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    kl_teacher_logits: torch.Tensor | None = None,
    kl_weight: float = 0.0,
) -> LossOutput:
    """Cross-entropy of `targets` (B, T) given `inputs_embeds` (B, T, C), where targets[b, t] is the token
    to predict at position t and -100 marks positions without a target.

    With `kl_teacher_logits` (K, V), one row per target in row-major order, and `kl_weight` > 0, the loss
    is cross-entropy + kl_weight * KL(teacher || student), the KL averaged over target tokens.
    """
    where = targets != -100
    logits = logits_at(llm, inputs_embeds, where, attention_mask).float()  # (K, V)
    tgt = targets[where]
    ce = F.cross_entropy(logits, tgt)
    loss, kl = ce, None
    if kl_teacher_logits is not None and kl_weight > 0:
        if kl_teacher_logits.shape != logits.shape:
            raise ValueError(f"teacher logits {tuple(kl_teacher_logits.shape)} != student's {tuple(logits.shape)}")
        teacher = kl_teacher_logits.float().log_softmax(-1)
        kl = F.kl_div(logits.log_softmax(-1), teacher, log_target=True, reduction="batchmean")
        loss = ce + kl_weight * kl
    correct = int((logits.argmax(-1) == tgt).sum())
    return LossOutput(
        loss=loss,
        num_tokens=int(tgt.numel()),
        correct=correct,
        ce=ce.detach(),
        kl=None if kl is None else kl.detach(),
    )


def logits_at(
    llm: Any, inputs_embeds: torch.Tensor, where: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The LLM's logits (K, V) at the positions where `where` (B, T) is True, in row-major order.

    Runs the decoder and the LM head as modules (never `llm.forward`: these are the units FSDP shards), and
    the head only at the K chosen positions: over this LLM's 49k-word vocabulary it would otherwise cost as
    much as the prefix of digests. No KV cache: nothing is generated, and a cache makes every compiled
    decoder block (`compile_llm`) specialise on its layer index.
    """
    decoder = llm.get_decoder()
    hidden = decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return llm.get_output_embeddings()(hidden[where])


def _readout(
    readout: ReadoutHead | None, digests: torch.Tensor, window_ids: torch.Tensor, llm: Any
) -> ReadoutOutput | None:
    return None if readout is None else readout(digests, window_ids, llm.get_input_embeddings().weight)


def autoencoding_inputs(
    model: Any, llm: Any, window_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The auto-encoding layout of windows (B, n): the LLM's input embeddings `[BEGIN] digests [END] [AE] w_0
    ... w_{n-2}`, their targets (-100 where none; the AE token predicts w_0, w_t predicts w_{t+1}) and the raw
    digests (B, m, C) in the compressor's dtype.
    """
    embed = llm.get_input_embeddings()
    dtype = embed.weight.dtype
    ctx = embed(window_ids)  # (B, n, C)
    m = core(model).config.digests_for(window_ids.shape[1])
    raw = model(ctx, None, num_digests=m)  # (B, m, C)
    prefix = ctx[:, :-1]  # the last window token is only ever a target
    inputs = torch.cat(
        (digest_block(core(model).special_embeddings, raw.to(dtype), autoencode=True), prefix), dim=1
    )  # (B, m + 3 + n - 1, C)
    targets = torch.full(inputs.shape[:2], -100, dtype=torch.long, device=window_ids.device)
    targets[:, m + 2 :] = window_ids
    return inputs, targets, raw


def autoencoding_loss(model: Any, llm: Any, window_ids: torch.Tensor, readout: ReadoutHead | None = None) -> LossOutput:
    """The LLM reconstructs each window (B, n) from its digests after the learned AE token
    (:func:`autoencoding_inputs`).

    With a `readout` head, also returns its loss on the same digests (see :mod:`.readout`); the caller
    weights and adds it.
    """
    inputs, targets, raw = autoencoding_inputs(model, llm, window_ids)
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
        (digest_block(core(model).special_embeddings, digests), embed(continuation_ids[:, :-1])), dim=1
    )  # (B, m + 2 + l - 1, C)
    targets = torch.full(inputs.shape[:2], -100, dtype=torch.long, device=window_ids.device)
    targets[:, m + 1 :] = continuation_ids  # [END] predicts c_0
    out = target_loss(llm, inputs, targets)
    out.readout = _readout(readout, raw, window_ids, llm)
    return out


@dataclass
class InstructExample:
    """One tokenized instruction example: its prompt as text-id pieces with context slots, and answer ids."""

    pieces: list[list[int] | int]  # token ids, or a context index (0 .. len(contexts_ids) - 1)
    contexts_ids: list[list[int]]  # token ids of each context (several for a multi-document record)
    answer_ids: list[int]
    teacher_prompt_ids: list[int] | None = None  # the full-text prompt (contexts as text), for KL or text mode


def full_text_prompt(pieces: Sequence[str | int], contexts: str | Sequence[str]) -> str:
    """The full-text baseline prompt: each context's text in its slot of the rendered chat prompt, joined
    exactly as :meth:`SoftPromptLM.build_inputs` joins string contexts (and then tokenized in one go)."""
    contexts = [contexts] if isinstance(contexts, str) else list(contexts)
    return "".join(p if isinstance(p, str) else contexts[p] for p in pieces)


def _as_contexts(context: str | Sequence[str]) -> list[str]:
    if isinstance(context, str):
        return [context]
    contexts = list(context)
    if not contexts or not all(isinstance(c, str) for c in contexts):
        raise ValueError("an instruction record needs one context text or a non-empty list of them")
    return contexts


def tokenize_instruct(
    tokenizer: Any,
    context: str | Sequence[str],
    prompt: str,
    answer: str,
    window_tokens: int,
    end_token: str | None = None,
    teacher: bool = False,
) -> InstructExample:
    """Tokenize one (context(s), prompt, answer) with the same chat layout SoftPromptLM uses at inference.

    `teacher` also tokenizes the full-text prompt that :func:`teacher_logits` reads.
    """
    contexts = _as_contexts(context)
    rendered = render_prompt(tokenizer, prompt, len(contexts))
    pieces: list[list[int] | int] = []
    for p in rendered:
        pieces.append(p if isinstance(p, int) else tokenizer(p, add_special_tokens=False)["input_ids"])
    end_token = end_of_turn(tokenizer) if end_token is None else end_token  # the template's own end of a turn
    answer_ids = tokenizer(answer.strip() + end_token, add_special_tokens=False)["input_ids"]
    ctx = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in contexts]
    full = tokenizer(full_text_prompt(rendered, contexts), add_special_tokens=False)["input_ids"] if teacher else None
    return InstructExample(pieces=pieces, contexts_ids=ctx, answer_ids=answer_ids, teacher_prompt_ids=full)


def tokenize_instruct_batch(
    tokenizer: Any,
    contexts: Sequence[str | Sequence[str]],
    prompts: Sequence[str],
    answers: Sequence[str],
    end_token: str | None = None,
    teacher: bool = False,
) -> list[InstructExample]:
    """:func:`tokenize_instruct` for many records, with one batched tokenizer call per field (fast). A record's
    context is a text or a list of texts (a multi-document record)."""
    per_record = [_as_contexts(c) for c in contexts]
    rendered = [render_prompt(tokenizer, p, len(c)) for p, c in zip(prompts, per_record, strict=True)]
    flat = [piece for pieces in rendered for piece in pieces if isinstance(piece, str)]
    flat_ids = iter(tokenizer(flat, add_special_tokens=False)["input_ids"]) if flat else iter([])
    flat_ctx = [c for cs in per_record for c in cs]
    ctx_iter = iter(tokenizer(flat_ctx, add_special_tokens=False, verbose=False)["input_ids"])
    end_token = end_of_turn(tokenizer) if end_token is None else end_token  # the template's own end of a turn
    ans_ids = tokenizer([a.strip() + end_token for a in answers], add_special_tokens=False)["input_ids"]
    full_ids: list[list[int] | None] = [None] * len(rendered)
    if teacher:
        full = [full_text_prompt(pieces, c) for pieces, c in zip(rendered, per_record, strict=True)]
        full_ids = tokenizer(full, add_special_tokens=False, verbose=False)["input_ids"]
    out = []
    for pieces, cs, a, f in zip(rendered, per_record, ans_ids, full_ids, strict=True):
        tokenized: list[list[int] | int] = [p if isinstance(p, int) else next(flat_ids) for p in pieces]
        ctx = [next(ctx_iter) for _ in cs]
        out.append(InstructExample(pieces=tokenized, contexts_ids=ctx, answer_ids=a, teacher_prompt_ids=f))
    return out


def _full_text_rows(llm: Any, examples: Sequence[InstructExample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded full-text rows `teacher_prompt_ids + answer_ids[:-1]` (ids, attention mask, and where the
    answer tokens are predicted), for :func:`teacher_logits` and :func:`text_instruct_loss`."""
    if any(ex.teacher_prompt_ids is None for ex in examples):
        raise ValueError("full-text rows need examples tokenized with teacher=True (the full-text prompt)")
    device = llm.get_input_embeddings().weight.device
    rows = [[*(ex.teacher_prompt_ids or ()), *ex.answer_ids[:-1]] for ex in examples]
    limit = max_positions(llm)
    longest = max(len(r) for r in rows)
    if limit and longest > limit:  # the teacher reads the whole text: say so instead of failing inside RoPE
        raise ValueError(
            f"a full-text prompt of {longest} tokens exceeds the LLM's {limit} positions: drop records "
            "with longer contexts from the instruction file"
        )
    ids = torch.zeros(len(rows), longest, dtype=torch.long, device=device)
    attn = torch.zeros_like(ids)
    where = torch.zeros_like(ids, dtype=torch.bool)
    for b, (row, ex) in enumerate(zip(rows, examples, strict=True)):
        ids[b, : len(row)] = torch.tensor(row, device=device)
        attn[b, : len(row)] = 1
        where[b, len(row) - len(ex.answer_ids) : len(row)] = True  # the last prompt token predicts answer[0]
    return ids, attn, where


def text_instruct_loss(llm: Any, examples: Sequence[InstructExample]) -> LossOutput:
    """Loss on the answer tokens with the contexts' full text in the prompt: what trains the *full-text* reader
    baseline (the same adapter recipe as the digest reader, on the same records, with the text instead of
    digests), so that digests are compared with a full-text reader trained as much as they were."""
    ids, attn, where = _full_text_rows(llm, examples)
    targets = torch.full_like(ids, -100)
    for b, ex in enumerate(examples):
        targets[b, where[b]] = torch.tensor(ex.answer_ids, device=ids.device)
    return target_loss(llm, llm.get_input_embeddings()(ids), targets, attention_mask=attn)


@torch.no_grad()
def teacher_logits(llm: Any, examples: Sequence[InstructExample], adapter: str | None = None) -> torch.Tensor:
    """The frozen LLM's logits (K, V) at the positions that predict each example's answer tokens, with the
    context's full text in the prompt instead of digests: the full-text baseline that instruction tuning
    distils from (the whole context, however many windows it spans), read through the LoRA `adapter` of that name
    inside the LLM (a tuned full-text reader) or, by default, through none.

    Rows are `teacher_prompt_ids + answer_ids[:-1]`, right-padded and masked. Both the teacher's and the
    student's rows end with the same answer tokens, so the K rows match :func:`instruct_loss`'s targets
    one for one (examples in order, answer tokens in order). No graph is kept: the teacher is a constant.
    """
    ids, attn, where = _full_text_rows(llm, examples)
    # The teacher reads the full text: never through the digest reader adapter.
    with adapter_scope(llm, adapter):
        return logits_at(llm, llm.get_input_embeddings()(ids), where, attn)


def instruct_loss(
    model: Any,
    llm: Any,
    examples: Sequence[InstructExample],
    kl_weight: float = 0.0,
    teacher_adapter: str | None = None,
) -> LossOutput:
    """Loss on the answer tokens of chat prompts whose context is given as digests.

    Contexts may span several windows; all windows of the batch are compressed in one padded pass.
    Rows are right-padded; padding is masked out of attention and loss. With `kl_weight` > 0 the loss adds
    kl_weight * KL(teacher || student) on the answer tokens, the teacher being the LLM reading the full
    text (:func:`teacher_logits`, through `teacher_adapter` when given; one more LLM forward, without gradients).
    """
    from ..windows import split_windows

    device = core(model).digest_embeddings.device
    embed = llm.get_input_embeddings()
    dtype = embed.weight.dtype
    cfg = core(model).config
    # One row per window of every context of every example: (example, context, window ids).
    windows = [
        (i, c, w)
        for i, ex in enumerate(examples)
        for c, ids in enumerate(ex.contexts_ids)
        for w in split_windows(ids, cfg.window_tokens)
    ]
    longest = max((len(w) for _, _, w in windows), default=1)
    ids = torch.zeros(len(windows), longest, dtype=torch.long, device=device)
    mask = torch.zeros(len(windows), longest, dtype=torch.bool, device=device)
    for r, (_, _, w) in enumerate(windows):
        ids[r, : len(w)] = torch.tensor(w, device=device)
        mask[r, : len(w)] = True
    counts = [cfg.digests_for(len(w)) for _, _, w in windows]
    digests = model(embed(ids), mask, num_digests=max(counts, default=1)).to(dtype) if windows else None
    per_context: list[list[list[torch.Tensor]]] = [[[] for _ in ex.contexts_ids] for ex in examples]
    for r, (i, c, _) in enumerate(windows):
        assert digests is not None  # there are windows
        per_context[i][c].append(digests[r, : counts[r]])

    special = core(model).special_embeddings
    no_windows = torch.zeros(0, special.shape[-1], dtype=dtype, device=device)  # an empty context: BEGIN END
    rows, row_targets = [], []
    for ex, contexts in zip(examples, per_context, strict=True):
        seq, tgt = [], []
        for p in ex.pieces:
            if isinstance(p, int):
                block = digest_block(special, torch.cat(contexts[p]) if contexts[p] else no_windows)
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
    inputs, attn = pad_rows(rows, "right")
    targets = torch.full(attn.shape, -100, dtype=torch.long, device=device)
    for b, t in enumerate(row_targets):
        targets[b, : t.shape[0]] = t
    teacher = teacher_logits(llm, examples, teacher_adapter) if kl_weight > 0 else None
    return target_loss(llm, inputs, targets, attention_mask=attn, kl_teacher_logits=teacher, kl_weight=kl_weight)
