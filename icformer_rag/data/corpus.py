"""Tokenized training corpus: clean documents, split them by document, cut token windows, write shards.

Layout of a corpus directory::

    train.bin, heldout.bin           all kept tokens of a split, concatenated (uint16; uint32 when
                                     the vocabulary has more than 65,536 entries)
    train.idx.npy, heldout.idx.npy   int64 (n_windows, 4): offset, length, doc_index, next_window (-1 if none)
    docs.jsonl                       one line per document: doc index = line number
    manifest.json                    sources, tokenizer, config, counts and the sha256 of every shard

The split is decided per document from a hash of its id and the seed, so no window of a held-out
document is ever trained on, and adding or removing one document does not move any other document.
The windows of a document are stored in order and next to each other; ``next_window`` links a window
to its continuation, which the language-modelling objective uses as its target.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .sources import DEFAULT_SOURCES, Document, Source, default_cache_dir, get_sources, sha256_file

__all__ = [
    "SPLITS",
    "CorpusConfig",
    "PreparedCorpus",
    "Manifest",
    "build_corpus",
    "clean_text",
    "prepare_documents",
    "read_docs",
    "split_score",
    "write_corpus",
]

SPLITS = ("train", "heldout")
FORMAT = "icformer_rag.corpus/1"
IDX_COLUMNS = ("offset", "length", "doc_index", "next_window")


@dataclass(frozen=True)
class CorpusConfig:
    """How a corpus is built. Every field except ``cache_dir`` is recorded in the manifest."""

    sources: tuple[str, ...] = DEFAULT_SOURCES
    """Names of registered sources (see ``sources.SOURCES``) to read when no sources are passed in."""
    cache_dir: str | None = None
    """Where downloaded packages are kept; None = ``$ICFORMER_RAG_CACHE_DIR`` or the default cache."""
    seed: int = 0
    """Seeds the document-level split (and nothing else: the rest of the build is order-deterministic)."""
    heldout_fraction: float = 0.02
    """Fraction of each source's documents held out."""
    min_heldout_docs_per_source: int = 3
    """Each source holds out at least this many documents (at most half of a small source)."""
    window_tokens: int = 512
    """Maximum tokens per window."""
    min_window_tokens: int = 64
    """A document's last, shorter window is kept only with at least this many tokens."""
    min_doc_chars: int = 200
    """Documents shorter than this after cleaning are dropped."""
    max_tokens_per_source: int | None = 6_000_000
    """Cap on training tokens from one source, so that a large source cannot dominate."""
    max_train_tokens: int | None = 40_000_000
    """Cap on all training tokens, shared out evenly over sources (water-filling)."""
    tokenize_batch_size: int = 64
    """Documents per tokenizer call."""

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("sources must name at least one source")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if self.min_heldout_docs_per_source < 0:
            raise ValueError("min_heldout_docs_per_source must be >= 0")
        if self.window_tokens < 1:
            raise ValueError(f"window_tokens must be >= 1, got {self.window_tokens}")
        if not 1 <= self.min_window_tokens <= self.window_tokens:
            raise ValueError(f"min_window_tokens must be in [1, window_tokens], got {self.min_window_tokens}")
        if self.min_doc_chars < 0:
            raise ValueError("min_doc_chars must be >= 0")
        for name in ("max_tokens_per_source", "max_train_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be None or >= 1, got {value}")
        if self.tokenize_batch_size < 1:
            raise ValueError("tokenize_batch_size must be >= 1")

    def resolved_cache_dir(self) -> Path:
        """The cache directory to use."""
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    def to_json(self) -> dict[str, Any]:
        """The manifest's copy: without ``cache_dir``, a local path that would make manifests differ."""
        data = asdict(self)
        data.pop("cache_dir")
        data["sources"] = list(self.sources)
        return data


# ---------------------------------------------------------------------------------------------------------
# Cleaning and the document-level split

_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)


def clean_text(text: str) -> str:
    """Unicode NFC, Unix newlines, no control or zero-width characters, no trailing spaces.

    Runs of spaces inside a line collapse to one, but leading indentation stays: code in the Python
    docs and verse in the plays keep their shape. At most one blank line separates paragraphs.
    """
    text = unicodedata.normalize("NFC", text).translate(_INVISIBLE)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ").replace("\u00a0", " ")
    text = "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch) != "Cc")
    lines = [re.sub(r"(?<=\S) {2,}", " ", line.rstrip()) for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def split_score(doc_id: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by ``doc_id`` and ``seed``: low scores are held out."""
    digest = hashlib.sha256(f"{seed}\x00{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass
class PreparedCorpus:
    """Cleaned, de-duplicated documents of each split, in source order, and what was dropped."""

    train: list[Document]
    heldout: list[Document]
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> reason -> documents

    def split_of(self) -> dict[str, str]:
        """doc_id -> split name."""
        return {d.doc_id: s for s in SPLITS for d in getattr(self, s)}


def prepare_documents(documents: Iterable[Document], config: CorpusConfig) -> PreparedCorpus:
    """Clean, drop short and duplicate documents, and assign each document to a split.

    A document is held out when its ``split_score`` is below ``heldout_fraction``; a source with too
    few such documents holds out its lowest-scoring ones up to ``min_heldout_docs_per_source`` (never
    more than half of it). Of identical texts only the first is kept, so one text cannot sit in both
    splits under two ids.
    """
    by_source: dict[str, list[Document]] = defaultdict(list)
    dropped: dict[str, dict[str, int]] = defaultdict(lambda: {"short": 0, "duplicate": 0})
    seen_ids: set[str] = set()
    seen_texts: set[bytes] = set()
    for doc in documents:
        if doc.doc_id in seen_ids:
            raise ValueError(f"duplicate doc_id {doc.doc_id!r}")
        seen_ids.add(doc.doc_id)
        text = clean_text(doc.text)
        if len(text) < config.min_doc_chars:
            dropped[doc.source]["short"] += 1
            continue
        digest = hashlib.sha256(text.encode()).digest()
        if digest in seen_texts:
            dropped[doc.source]["duplicate"] += 1
            continue
        seen_texts.add(digest)
        by_source[doc.source].append(Document(doc.doc_id, doc.source, clean_text(doc.title), text))

    train: list[Document] = []
    heldout: list[Document] = []
    for docs in by_source.values():
        scores = {d.doc_id: split_score(d.doc_id, config.seed) for d in docs}
        n_held = sum(s < config.heldout_fraction for s in scores.values())
        n_held = max(n_held, min(config.min_heldout_docs_per_source, len(docs) // 2))
        held = set(sorted(scores, key=lambda i: (scores[i], i))[:n_held])
        for d in docs:
            (heldout if d.doc_id in held else train).append(d)
    return PreparedCorpus(train, heldout, {k: dict(v) for k, v in dropped.items()})


# ---------------------------------------------------------------------------------------------------------
# Tokenizing and windows


def _tokenize(
    docs: Sequence[Document], tokenizer: Any, batch_size: int, dtype: type, progress: bool
) -> Iterator[np.ndarray]:
    """Token ids of each document (no special tokens), batched because one call per text is slow."""
    bar = tqdm(total=len(docs), desc="tokenizing", unit="doc", disable=not progress)
    n_tokens = 0
    for start in range(0, len(docs), batch_size):
        batch = [d.text for d in docs[start : start + batch_size]]
        # verbose=False: documents longer than the model's context are expected here; they become windows.
        enc = tokenizer(batch, add_special_tokens=False, return_attention_mask=False, verbose=False)
        for ids in enc["input_ids"]:
            arr = np.asarray(ids, dtype=np.int64)
            n_tokens += len(arr)
            yield arr.astype(dtype)
        bar.update(len(batch))
        bar.set_postfix(tokens=f"{n_tokens / 1e6:.1f}M")
    bar.close()


def _window_lengths(n_tokens: int, window: int, min_window: int) -> list[int]:
    """Lengths of the consecutive windows of a document; a last window under min_window is dropped."""
    lengths = [window] * (n_tokens // window)
    tail = n_tokens % window
    if tail >= min_window:
        lengths.append(tail)
    return lengths


def _waterfill(totals: dict[str, int], budget: int) -> dict[str, int]:
    """Share ``budget`` over sources: small sources keep everything, large ones get equal shares."""
    caps: dict[str, int] = {}
    remaining = budget
    items = sorted(totals.items(), key=lambda kv: (kv[1], kv[0]))
    for i, (name, total) in enumerate(items):
        caps[name] = min(total, remaining // (len(items) - i))
        remaining -= caps[name]
    return caps


def _vocab_sha256(tokenizer: Any) -> str:
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """What a corpus directory holds and how it was made (``manifest.json``)."""

    config: dict[str, Any]
    tokenizer: dict[str, Any]
    dtype: str
    sources: list[dict[str, Any]]
    counts: dict[str, dict[str, dict[str, int]]]  # split -> source (and "total") -> docs/windows/tokens
    dropped: dict[str, dict[str, int]]  # source -> reason -> count
    files: dict[str, dict[str, Any]]  # file name -> sha256, bytes
    format: str = FORMAT

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    def to_json(self) -> str:
        """Stable JSON (sorted keys) so that equal builds give byte-identical manifests."""
        return json.dumps(asdict(self), indent=1, sort_keys=True, ensure_ascii=False) + "\n"

    def save(self, directory: str | Path) -> Path:
        """Write ``manifest.json`` into ``directory``."""
        path = Path(directory) / "manifest.json"
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Manifest:
        """Read ``manifest.json`` from a corpus directory."""
        data = json.loads((Path(directory) / "manifest.json").read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"{directory} is not a corpus of format {FORMAT} (found {data.get('format')})")
        return cls(**data)


def write_corpus(
    out_dir: str | Path,
    prepared: PreparedCorpus,
    tokenizer: Any,
    config: CorpusConfig,
    sources_info: Sequence[dict[str, Any]] = (),
    progress: bool = True,
) -> Manifest:
    """Tokenize prepared documents, cut windows, apply the token caps and write shards and manifest.

    ``tokenizer`` is any Hugging Face tokenizer (called as ``tokenizer(texts, add_special_tokens=False)``).
    Caps apply to the training split only and drop whole documents, in ``split_score`` order, so the
    documents that remain are a hash-random, reproducible subset.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab_size = len(tokenizer)
    dtype = np.uint16 if vocab_size <= 1 << 16 else np.uint32

    docs = [*prepared.train, *prepared.heldout]
    split = ["train"] * len(prepared.train) + ["heldout"] * len(prepared.heldout)
    # Documents keep source order inside each split; index = position in docs.jsonl.
    order = sorted(range(len(docs)), key=lambda i: (SPLITS.index(split[i]), i))
    docs = [docs[i] for i in order]
    split = [split[i] for i in order]

    tokens: list[np.ndarray] = []
    lengths: list[list[int]] = []
    for ids in _tokenize(docs, tokenizer, config.tokenize_batch_size, dtype, progress):
        if len(ids) and int(ids.max()) >= vocab_size:
            raise ValueError(f"token id {int(ids.max())} >= len(tokenizer) = {vocab_size}")
        tokens.append(ids)
        lengths.append(_window_lengths(len(ids), config.window_tokens, config.min_window_tokens))

    dropped: dict[str, dict[str, int]] = defaultdict(dict)
    for source, reasons in prepared.dropped.items():
        for reason, n in reasons.items():
            dropped[source][f"{reason}_docs"] = n
    for d, lens in zip(docs, lengths, strict=True):
        if not lens:
            dropped[d.source]["too_few_tokens_docs"] = dropped[d.source].get("too_few_tokens_docs", 0) + 1

    # Token caps on the training split: per source first, then the total shared out evenly.
    keep = [bool(lens) for lens in lengths]
    train_by_source: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(docs):
        if split[i] == "train" and keep[i]:
            train_by_source[d.source].append(i)
    for idxs in train_by_source.values():
        idxs.sort(key=lambda i: (split_score(docs[i].doc_id, config.seed), docs[i].doc_id))
    totals = {s: sum(sum(lengths[i]) for i in idxs) for s, idxs in train_by_source.items()}
    caps = {s: min(t, config.max_tokens_per_source or t) for s, t in totals.items()}
    if config.max_train_tokens is not None and sum(caps.values()) > config.max_train_tokens:
        caps = _waterfill(caps, config.max_train_tokens)
    for source, idxs in train_by_source.items():
        used = 0
        for i in idxs:
            n = sum(lengths[i])
            if used + n <= caps[source]:
                used += n
            else:
                keep[i] = False
                dropped[source]["capped_docs"] = dropped[source].get("capped_docs", 0) + 1
                dropped[source]["capped_tokens"] = dropped[source].get("capped_tokens", 0) + n

    counts: dict[str, dict[str, dict[str, int]]] = {s: {} for s in SPLITS}
    files: dict[str, dict[str, Any]] = {}
    for name in SPLITS:
        chunks: list[np.ndarray] = []
        rows: list[tuple[int, int, int, int]] = []
        offset = 0
        for i, d in enumerate(docs):
            if split[i] != name or not keep[i]:
                continue
            c = counts[name].setdefault(d.source, {"docs": 0, "windows": 0, "tokens": 0, "tail_tokens": 0})
            n_kept = sum(lengths[i])
            chunks.append(tokens[i][:n_kept])
            c["docs"] += 1
            c["windows"] += len(lengths[i])
            c["tokens"] += n_kept
            c["tail_tokens"] += len(tokens[i]) - n_kept
            for j, n in enumerate(lengths[i]):
                nxt = len(rows) + 1 if j + 1 < len(lengths[i]) else -1
                rows.append((offset, n, i, nxt))
                offset += n
        total = {k: sum(c[k] for c in counts[name].values()) for k in ("docs", "windows", "tokens", "tail_tokens")}
        counts[name]["total"] = total
        flat = np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)
        flat.astype(dtype, copy=False).tofile(out / f"{name}.bin")
        idx = np.asarray(rows, dtype=np.int64).reshape(-1, len(IDX_COLUMNS))
        np.save(out / f"{name}.idx.npy", idx)

    with open(out / "docs.jsonl", "w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            status = "kept" if keep[i] else ("capped" if lengths[i] else "too_few_tokens")
            row = {
                "index": i,
                "doc_id": d.doc_id,
                "source": d.source,
                "title": d.title,
                "split": split[i],
                "status": status,
                "tokens": len(tokens[i]),
                "windows": len(lengths[i]) if keep[i] else 0,
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    for name in (*(f"{s}{ext}" for s in SPLITS for ext in (".bin", ".idx.npy")), "docs.jsonl"):
        path = out / name
        files[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}

    manifest = Manifest(
        config=config.to_json(),
        tokenizer={
            "name": str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__),
            "class": type(tokenizer).__name__,
            "vocab_size": vocab_size,
            "vocab_sha256": _vocab_sha256(tokenizer),
        },
        dtype=np.dtype(dtype).name,
        sources=list(sources_info),
        counts=counts,
        dropped={k: dict(sorted(v.items())) for k, v in sorted(dropped.items())},
        files=files,
    )
    manifest.save(out)
    return manifest


def build_corpus(
    out_dir: str | Path,
    tokenizer: Any,
    config: CorpusConfig,
    sources: Sequence[Source] | None = None,
    progress: bool = True,
) -> Manifest:
    """Fetch the sources (cached), clean and split their documents, and write the corpus to ``out_dir``.

    ``sources`` defaults to the registered sources named in ``config.sources``.
    """
    sources = list(sources) if sources is not None else get_sources(config.sources)
    cache = config.resolved_cache_dir()
    infos = [{**s.describe(cache), "description": s.description} for s in sources]
    prepared = prepare_documents((d for s in sources for d in s.documents(cache)), config)
    return write_corpus(out_dir, prepared, tokenizer, config, infos, progress=progress)


def read_docs(directory: str | Path) -> list[dict[str, Any]]:
    """The rows of ``docs.jsonl``; row ``i`` describes doc index ``i``."""
    with open(Path(directory) / "docs.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]
