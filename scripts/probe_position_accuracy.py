"""Where in a window does auto-encoding fail? Teacher-forced next-token accuracy and loss by position.

    PYTHONPATH=. python scripts/probe_position_accuracy.py [CHECKPOINT ...] [--windows 16] [--length 128]

For held-out windows of the corpus (`.data/corpus`, the first `--windows` of at least `--length` tokens), the
frozen LLM reads `[BEGIN] digests [END] [AE]` and the true window (teacher forcing), as in training; prints per
checkpoint the accuracy and mean loss of its predictions in position buckets (token 0, 1-3, 4-15, 16-63, 64+),
and the same for a freshly initialised compressor, whose digests carry no information about the window: the gap
between the two is what the digests contribute at each position. Greedy reconstruction starts at token 0, so a
weak first bucket derails everything after it. `--json PATH` also writes the numbers.
"""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import torch
import torch.nn.functional as F

from icformer_rag.compressor import ContextCompressor, load_compressor
from icformer_rag.training.objectives import autoencoding_inputs, logits_at

BUCKETS = ((0, 1), (1, 4), (4, 16), (16, 64), (64, None))


def heldout_windows(data_dir: str, count: int, length: int) -> torch.Tensor:
    data = np.memmap(f"{data_dir}/heldout.bin", dtype=np.uint16, mode="r")
    rows = [row for row in np.load(f"{data_dir}/heldout.idx.npy") if row[1] >= length][:count]
    if len(rows) < count:
        raise SystemExit(f"only {len(rows)} held-out windows of >= {length} tokens in {data_dir}")
    return torch.tensor(np.stack([data[row[0] : row[0] + length].astype(np.int64) for row in rows]))


@torch.no_grad()
def position_stats(comp: ContextCompressor, llm, ids: torch.Tensor, batch: int = 8) -> dict[str, list[float]]:
    """Per window position: accuracy and loss of the teacher-forced reconstruction (the training layout,
    :func:`autoencoding_inputs`), averaged over windows."""
    model = comp.model.eval()
    hits, losses = [], []
    for start in range(0, len(ids), batch):
        w = ids[start : start + batch]
        inputs, targets, _ = autoencoding_inputs(model, llm, w)
        logits = logits_at(llm, inputs, targets != -100).float().view(*w.shape, -1)  # (B, n, V): t predicts w_t
        hits.append((logits.argmax(-1) == w).float())
        losses.append(F.cross_entropy(logits.transpose(1, 2), w, reduction="none"))
    acc, loss = torch.cat(hits).mean(0), torch.cat(losses).mean(0)
    return {"acc": acc.tolist(), "loss": loss.tolist()}


def bucketed(values: list[float]) -> list[float]:
    return [float(np.mean(values[a:b])) for a, b in BUCKETS if a < len(values)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="*", help="compressor checkpoints (default: the shipped one)")
    parser.add_argument("--data-dir", default=".data/corpus")
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--json", help="also write the per-position numbers here")
    args = parser.parse_args()
    torch.manual_seed(0)
    first, llm, tok = load_compressor(args.checkpoints[0] if args.checkpoints else None, device="cpu")
    comps = {name: ContextCompressor.from_pretrained(name, llm, tok) for name in args.checkpoints[1:]}
    comps = {args.checkpoints[0] if args.checkpoints else "shipped": first, **comps}
    comps["fresh (no information)"] = ContextCompressor.from_llm(llm, tok, copy.deepcopy(first.config), seed=0)
    ids = heldout_windows(args.data_dir, args.windows, args.length)
    names = [f"{a}" if b == a + 1 else f"{a}-{'' if b is None else b - 1}" for a, b in BUCKETS]
    print(f"{len(ids)} held-out windows of {args.length} tokens, teacher-forced; accuracy / loss (nats) by position")
    print(f"| compressor | all | {' | '.join(names)} |")
    print("|---|---|" + "---|" * len(names))
    results = {}
    for name, comp in comps.items():
        stats = position_stats(comp, llm, ids)
        results[name] = stats
        cells = [f"{a:.3f} / {lo:.2f}" for a, lo in zip(bucketed(stats["acc"]), bucketed(stats["loss"]), strict=True)]
        overall = f"{np.mean(stats['acc']):.3f} / {np.mean(stats['loss']):.2f}"
        print(f"| {name} | {overall} | {' | '.join(cells)} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"windows": len(ids), "length": args.length, "buckets": names, "results": results}, f)


if __name__ == "__main__":
    main()
