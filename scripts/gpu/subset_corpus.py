"""Copy a corpus keeping every k-th training document (all sources in proportion), for a GPU call that cannot
carry the whole corpus beside the tree and the LLM. The held-out split and the manifest are copied unchanged; the
manifest gains a "subset" entry naming k and the kept token count.

    python scripts/gpu/subset_corpus.py .data/corpus .data/corpus_half --every 2
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np


def subset(src: Path, dst: Path, every: int) -> int:
    dst.mkdir(parents=True, exist_ok=True)
    idx = np.load(src / "train.idx.npy")  # rows: offset, length, doc index, next window (-1 at a document's end)
    manifest = json.loads((src / "manifest.json").read_text())
    dtype = np.uint32 if manifest.get("tokenizer", {}).get("vocab_size", 0) > 65536 else np.uint16
    tokens = np.memmap(src / "train.bin", dtype=dtype, mode="r")
    keep = np.flatnonzero(idx[:, 2] % every == 0)
    new_row = -np.ones(len(idx), dtype=np.int64)
    new_row[keep] = np.arange(len(keep))
    out_rows, pieces, offset = [], [], 0
    for r in keep:
        start, length, doc, nxt = idx[r]
        pieces.append(np.asarray(tokens[start : start + length]))
        out_rows.append([offset, length, doc // every, new_row[nxt] if nxt >= 0 else -1])
        offset += length
    np.concatenate(pieces).astype(dtype).tofile(dst / "train.bin")
    np.save(dst / "train.idx.npy", np.asarray(out_rows, dtype=np.int64))
    for name in ("heldout.bin", "heldout.idx.npy"):
        shutil.copy(src / name, dst / name)
    manifest["subset"] = {"every": every, "train_tokens": int(offset), "train_windows": len(out_rows)}
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return int(offset)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--every", type=int, default=2)
    args = parser.parse_args()
    print(f"kept {subset(args.src, args.dst, args.every):,} training tokens")
