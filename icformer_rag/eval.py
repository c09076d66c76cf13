"""Evaluation of a compressor: auto-encoding (BLEU-4 and exact token accuracy of greedy reconstructions of
held-out windows) and QA (answer accuracy from full text, from digests and from no context). The metrics here serve
the counterfactual evaluation too; the run that puts them together is :mod:`icformer_rag.eval_run`."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .compressor import ContextCompressor
from .generation import GenerationSettings, SoftPromptLM
from .prompt import digest_block
from .reader import adapter_scope


def _ngrams(seq: Sequence[int], n: int) -> Counter:
    return Counter(tuple(seq[i : i + n]) for i in range(len(seq) - n + 1))


def corpus_bleu(references: Sequence[Sequence[int]], hypotheses: Sequence[Sequence[int]], max_n: int = 4) -> float:
    """Corpus BLEU (Papineni et al. 2002) over token sequences: clipped n-gram precisions for n = 1..max_n,
    geometric mean, brevity penalty. 1.0 for identical corpora, 0.0 when some order has no match."""
    if len(references) != len(hypotheses):
        raise ValueError("references and hypotheses differ in number")
    matches, totals = [0] * max_n, [0] * max_n
    ref_len = hyp_len = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        ref_len += len(ref)
        hyp_len += len(hyp)
        for n in range(1, max_n + 1):
            h, r = _ngrams(hyp, n), _ngrams(ref, n)
            matches[n - 1] += sum(min(c, r[g]) for g, c in h.items())
            totals[n - 1] += max(0, len(hyp) - n + 1)
    if hyp_len == 0 or min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals, strict=True)) / max_n
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_precision)


def token_accuracy(references: Sequence[Sequence[int]], hypotheses: Sequence[Sequence[int]]) -> float:
    """Share of reference positions whose token the hypothesis reproduces at the same position."""
    hits = sum(sum(a == b for a, b in zip(r, h, strict=False)) for r, h in zip(references, hypotheses, strict=True))
    return hits / max(1, sum(len(r) for r in references))


@torch.no_grad()
def window_digests(
    compressor: ContextCompressor, windows: Sequence[Sequence[int]], batch_size: int = 32
) -> list[torch.Tensor]:
    """The digests of each window, compressed in batches of `batch_size` (what :func:`reconstruct` reads)."""
    out: list[torch.Tensor] = []
    for i in range(0, len(windows), batch_size):
        out.extend(compressor.compress_windows(windows[i : i + batch_size]))
    return out


@torch.no_grad()
def reconstruct(
    compressor: ContextCompressor,
    llm: Any,
    windows: Sequence[Sequence[int]],
    batch_size: int = 32,
    digests: Sequence[torch.Tensor] | None = None,
) -> list[list[int]]:
    """Greedy reconstruction of each window from its digests (the auto-encoding prompt of training). `digests`
    (one (M, C) tensor per window, e.g. from :func:`window_digests` passed through a storage codec) are read
    instead of compressing the windows."""
    if digests is not None and len(digests) != len(windows):
        raise ValueError(f"{len(digests)} digests for {len(windows)} windows")
    model = compressor.model
    embed = llm.get_input_embeddings()
    dtype = embed.weight.dtype
    special = model.special_embeddings.to(dtype)
    out: list[list[int]] = []
    for i in range(0, len(windows), batch_size):
        group = windows[i : i + batch_size]
        lengths = {len(w) for w in group}
        if len(lengths) != 1:
            raise ValueError("reconstruct() takes windows of one length per batch")
        n = lengths.pop()
        if digests is None:
            batch = compressor.compress_windows(group)
        else:
            batch = [d.to(special.device) for d in digests[i : i + batch_size]]
        rows = torch.stack([digest_block(special, d.to(dtype), autoencode=True) for d in batch])
        mask = torch.ones(rows.shape[:2], dtype=torch.long, device=rows.device)
        # Exactly n tokens, as many as the window: end-of-sequence must not cut a reconstruction short. The prompt
        # holds digests, so the LLM reads it through the compressor's reader adapter, if it has one.
        with adapter_scope(llm, compressor.reader_name):
            gen = llm.generate(
                inputs_embeds=rows,
                attention_mask=mask,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=0,
            )
        out.extend(gen[:, :n].tolist())
    return out


def fact_verdicts(references: Sequence[str], reconstructions: Sequence[str]) -> list[list[bool]]:
    """Per reference text, one verdict per fact: its names and numbers (:func:`key_terms.names` and
    :func:`key_terms.numbers`, in that order) and whether each occurs exactly (as a substring) in its
    reconstruction. The same references give the same facts in the same order, so two compressors' verdicts pair
    up fact for fact (a paired test, :func:`compare_fact_verdicts`)."""
    from .key_terms import names, numbers

    if len(references) != len(reconstructions):
        raise ValueError("references and reconstructions differ in number")
    return [[f in rec for f in names(ref) + numbers(ref)] for ref, rec in zip(references, reconstructions, strict=True)]


def fact_counts(references: Sequence[str], reconstructions: Sequence[str]) -> tuple[int, int]:
    """(facts reproduced, facts) over all references (see :func:`fact_verdicts`)."""
    return _tally(fact_verdicts(references, reconstructions))


def _tally(verdicts: Sequence[Sequence[bool]]) -> tuple[int, int]:
    """(facts reproduced, facts) of per-window fact verdicts."""
    return sum(map(sum, verdicts)), sum(map(len, verdicts))


def fact_recall(references: Sequence[str], reconstructions: Sequence[str]) -> float | None:
    """Micro-averaged share of the references' names and numbers that their reconstructions reproduce exactly
    (see :func:`fact_counts`); None when the references hold none."""
    hits, total = fact_counts(references, reconstructions)
    return hits / total if total else None


def autoencoding_scores(
    compressor: ContextCompressor,
    llm: Any,
    windows: Sequence[Sequence[int]],
    batch_size: int = 32,
    digests: Sequence[torch.Tensor] | None = None,
) -> dict[str, Any]:
    """BLEU-4, token accuracy and fact recall of greedy reconstructions of `windows` (one length), from their
    `digests` when given (see :func:`reconstruct`)."""
    recon = reconstruct(compressor, llm, windows, batch_size, digests)
    decode = compressor.tokenizer.decode
    verdicts = fact_verdicts([decode(w) for w in windows], [decode(r) for r in recon])
    hits, facts = _tally(verdicts)
    return {
        "bleu4": corpus_bleu(windows, recon),
        "token_acc": token_accuracy(windows, recon),
        # Names and numbers are what a question asks for: BLEU can be high while every one of them is wrong.
        "fact_recall": hits / facts if facts else None,
        "facts": facts,
        "windows": len(windows),
        "compression": compressor.config.ratio,
        # Per window, per fact: what a paired test between two compressors on the same windows needs.
        "fact_verdicts": verdicts,
    }


def eval_autoencoding(
    compressor: ContextCompressor,
    llm: Any,
    data_dir: str | Path,
    num_windows: int = 64,
    lengths: Sequence[int] = (512,),
    seed: int = 1234,
    batch_size: int = 32,
) -> dict[str, Any]:
    """BLEU-4, token accuracy and fact recall of reconstructions of held-out spans, per window length."""
    from .training.sampling import SpanSampler

    if num_windows < 1:
        # Zero windows has no BLEU; without this the sampler failed with numpy's "need at least one array".
        raise ValueError(f"num_windows must be >= 1, got {num_windows}")
    sampler = SpanSampler(data_dir, "heldout")
    results: dict[str, Any] = {}
    for n in lengths:
        windows = sampler.sample(np.random.default_rng([seed, n]), num_windows, n).tolist()
        results[str(n)] = autoencoding_scores(compressor, llm, windows, batch_size)
    return results


def sign_test(a: Sequence[bool], b: Sequence[bool]) -> dict[str, Any]:
    """Exact two-sided sign test of paired verdicts: `wins` (a right, b wrong), `losses` (the reverse) and the
    p-value of so uneven a split under "either is as likely" (ties, both right or both wrong, carry no
    information and are left out)."""
    if len(a) != len(b):
        raise ValueError(f"paired verdicts differ in number: {len(a)} and {len(b)}")
    wins = sum(bool(x) and not y for x, y in zip(a, b, strict=True))
    losses = sum(bool(y) and not x for x, y in zip(a, b, strict=True))
    return sign_test_counts(wins, losses)


def sign_test_counts(wins: int, losses: int) -> dict[str, Any]:
    """The exact two-sided sign test of `wins` against `losses` (ties left out), as :func:`sign_test` reports it."""
    n = wins + losses
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n) if n else 1.0
    return {"wins": wins, "losses": losses, "p": p}


def compare_fact_verdicts(a: Sequence[Sequence[bool]], b: Sequence[Sequence[bool]]) -> dict[str, Any]:
    """Two compressors' auto-encoding fact verdicts on the same windows (:func:`fact_verdicts`), paired twice: fact
    by fact (`fact`: a sign test over facts one reproduces and the other does not) and window by window (`window`:
    windows where a reproduces more of the facts against windows where it reproduces fewer). Facts of one window
    are not independent (one garbled sentence loses several), so the window-level test is the conservative one."""
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b, strict=False)):
        raise ValueError("fact verdicts of different windows: compare reports on the same windows")
    fact = sign_test([v for w in a for v in w], [v for w in b for v in w])
    wins = sum(sum(x) > sum(y) for x, y in zip(a, b, strict=True))
    losses = sum(sum(x) < sum(y) for x, y in zip(a, b, strict=True))
    return {"fact": fact, "window": sign_test_counts(wins, losses)}


QA_MODES = ("full_text", "digests", "no_context")
BASELINE_MODES = ("full_text", "no_context")  # answers that do not depend on the compressor
# With key_terms=True: digests followed by the context's names-and-numbers line, and the line alone (the control:
# how much the line answers by itself).
KEY_TERMS_MODES = ("digests_key_terms", "key_terms")


def qa_answers(
    lm: SoftPromptLM,
    records: Sequence[dict[str, Any]],
    mode: str,
    batch_size: int = 16,
    max_new_tokens: int = 48,
    show_progress: bool = True,
) -> tuple[list[str], float]:
    """Greedy answers to the records' questions in one mode of :data:`QA_MODES` or :data:`KEY_TERMS_MODES`, and
    the seconds it took (compression and key-term extraction included)."""
    from .key_terms import key_terms_line, with_key_terms

    if mode not in QA_MODES + KEY_TERMS_MODES:
        raise ValueError(f"mode must be one of {QA_MODES + KEY_TERMS_MODES}, got {mode!r}")
    if mode.startswith("digests") and lm.compressor is None:
        raise ValueError("QA from digests needs a SoftPromptLM with a compressor")
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    answers: list[str] = []
    seconds = 0.0
    for i in tqdm(range(0, len(records), batch_size), desc=f"qa {mode}", disable=not show_progress):
        group = records[i : i + batch_size]
        t = time.perf_counter()
        if mode == "full_text":
            contexts: list[list[Any]] = [[r["context"]] for r in group]
        elif mode == "digests":
            assert lm.compressor is not None  # checked above
            contexts = [[d] for d in lm.compressor.compress([r["context"] for r in group])]
        elif mode == "digests_key_terms":
            assert lm.compressor is not None
            digests = lm.compressor.compress([r["context"] for r in group])
            contexts = [with_key_terms([d], [r["context"]]) for d, r in zip(digests, group, strict=True)]
        elif mode == "key_terms":  # the line alone: no digest before it
            contexts = [[line] if (line := key_terms_line(r["context"])) else [] for r in group]
        else:
            contexts = [[] for _ in group]
        answers += lm.generate_batch([r["question"] for r in group], contexts, settings)
        seconds += time.perf_counter() - t
    return answers, seconds


def eval_qa(
    lm: SoftPromptLM,
    records: Sequence[dict[str, Any]],
    batch_size: int = 16,
    max_new_tokens: int = 48,
    show_progress: bool = True,
    baselines: dict[str, tuple[list[str], float]] | None = None,
    key_terms: bool = False,
) -> dict[str, Any]:
    """QA accuracy (gold answer contained in the normalized output) with full text, digests, no context, and
    with `key_terms` also digests + the names-and-numbers line (:mod:`icformer_rag.key_terms`) and the line alone.

    `baselines` maps "full_text" / "no_context" to answers already generated for these records (from
    :func:`qa_answers` with the same LLM and settings): several checkpoints evaluated in one run share them,
    since neither depends on the compressor.
    """
    from .data.instruct import answer_in

    if lm.compressor is None:
        raise ValueError("eval_qa needs a SoftPromptLM with a compressor")
    answered = dict(baselines or {})
    for mode, (answers, _) in answered.items():
        if mode not in BASELINE_MODES or len(answers) != len(records):
            raise ValueError(f"baselines: expected {BASELINE_MODES} with {len(records)} answers each, got {mode!r}")
    modes = QA_MODES + (KEY_TERMS_MODES if key_terms else ())
    for mode in modes:
        if mode not in answered:
            answered[mode] = qa_answers(lm, records, mode, batch_size, max_new_tokens, show_progress)
    outputs = {m: answered[m][0] for m in modes}
    timings = {m: answered[m][1] for m in modes}
    correct = {m: [answer_in(r["answer"], o) for r, o in zip(records, outputs[m], strict=True)] for m in modes}
    acc = {m: sum(correct[m]) / max(1, len(records)) for m in modes}
    # Per question kind (year, number, who, cloze...): where digests lose against the full text says which
    # details they drop.
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in sorted({r.get("kind", "qa") for r in records}):
        rows = [i for i, r in enumerate(records) if r.get("kind", "qa") == kind]
        by_kind[kind] = {"examples": len(rows), **{m: sum(correct[m][i] for i in rows) / len(rows) for m in modes}}
    full = acc["full_text"]
    return {
        "accuracy": acc,
        "digest_over_full": acc["digests"] / full if full else None,
        **({"digest_key_terms_over_full": acc["digests_key_terms"] / full if full else None} if key_terms else {}),
        "examples": len(records),
        "by_kind": by_kind,
        "correct": [{"kind": r.get("kind", "qa"), **{m: correct[m][j] for m in modes}} for j, r in enumerate(records)],
        "seconds": timings,
        "baselines_shared": sorted(baselines) if baselines else [],
        "samples": [
            {"question": r["question"], "gold": r["answer"], **{m: outputs[m][j] for m in modes}}
            for j, r in enumerate(records[:10])
        ],
    }


def load_qa(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """QA records (context, question, answer) from a JSONL file."""
    records = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            q = r.get("question") or r.get("prompt")
            if r.get("context") and q and r.get("answer"):
                kind = r.get("kind", "qa")
                records.append({"context": r["context"], "question": q, "answer": r["answer"], "kind": kind})
    return records[:limit] if limit else records
