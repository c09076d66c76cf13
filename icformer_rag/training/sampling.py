"""Batches for pretraining: random spans of the corpus' token shards, a pure function of (seed, step, rank).

Spans start anywhere inside a document (not only on window boundaries), which shows the compressor far
more distinct windows than the corpus has. Because a batch depends only on (seed, step, rank), resuming
at step s continues with exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class SpanSampler:
    """Draws (window, continuation) token spans that lie inside one document of a corpus split."""

    def __init__(self, data_dir: str | Path, split: str = "train") -> None:
        data_dir = Path(data_dir)
        bin_path, idx_path = data_dir / f"{split}.bin", data_dir / f"{split}.idx.npy"
        if not bin_path.is_file() or not idx_path.is_file():
            raise FileNotFoundError(
                f"no {split}.bin / {split}.idx.npy in {data_dir}: build the corpus first "
                "(python -m icformer_rag.data build --out DIR)"
            )
        manifest = data_dir / "manifest.json"
        dtype = np.uint16
        if manifest.is_file():
            dtype = np.dtype(json.loads(manifest.read_text()).get("dtype", "uint16"))
        self.data_dir, self.split = data_dir, split
        self.tokens = np.memmap(bin_path, dtype=dtype, mode="r")
        self.windows = idx = np.load(idx_path)  # rows: offset, length, doc index, next window (-1 at a doc's end)
        # A document's windows are adjacent in the shard: its span runs from its first window's offset to
        # its last window's end.
        docs = idx[:, 2]
        starts = np.full(docs.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
        ends = np.zeros(docs.max() + 1, dtype=np.int64)
        np.minimum.at(starts, docs, idx[:, 0])
        np.maximum.at(ends, docs, idx[:, 0] + idx[:, 1])
        keep = ends > 0
        self.doc_start, self.doc_end = starts[keep], ends[keep]
        self.num_tokens = int((self.doc_end - self.doc_start).sum())

    def sample(self, rng: np.random.Generator, batch: int, length: int, continuation: int = 0) -> np.ndarray:
        """(batch, length + continuation) token ids, each row a contiguous span of one document.

        Documents are drawn in proportion to the number of spans they hold. Rows of documents shorter than
        the span are never drawn; if none is long enough, a ValueError says so.
        """
        need = length + continuation
        room = self.doc_end - self.doc_start - need + 1  # valid start positions per document
        ok = room > 0
        if not ok.any():
            raise ValueError(f"no document holds {need} tokens")
        weights = np.where(ok, room, 0).astype(np.float64)
        docs = rng.choice(len(weights), size=batch, p=weights / weights.sum())
        starts = self.doc_start[docs] + (rng.random(batch) * room[docs]).astype(np.int64)
        out = np.stack([np.asarray(self.tokens[s : s + need], dtype=np.int64) for s in starts])
        return out

    def leading_windows(self, count: int, length: int) -> np.ndarray:
        """(count, length) token ids: the first `length` tokens of each of the split's first `count` windows (in
        shard order) that hold at least `length` tokens. No randomness: a fixed sample that every checkpoint and
        every run of a probe sees alike (`python -m icformer_rag.training.probes`). A ValueError says when the
        split has fewer such windows."""
        if count < 1 or length < 1:
            raise ValueError(f"count and length must be >= 1, got {count} and {length}")
        rows = self.windows[self.windows[:, 1] >= length][:count]
        if len(rows) < count:
            raise ValueError(f"only {len(rows)} {self.split} windows of >= {length} tokens in {self.data_dir}")
        return np.stack([np.asarray(self.tokens[r[0] : r[0] + length], dtype=np.int64) for r in rows])
