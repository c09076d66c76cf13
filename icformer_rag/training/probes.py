"""Where in a window does auto-encoding fail? Teacher-forced next-token accuracy and loss by position.

    python -m icformer_rag.training.probes [CHECKPOINT ...] [--data-dir .data/corpus] [--windows 16] [--length 128]

For held-out windows of the corpus (the trainer's reader, :meth:`SpanSampler.leading_windows`: the first
`--windows` windows of at least `--length` tokens), the frozen LLM reads `[BEGIN] digests [END] [AE]` and the true
window (teacher forcing), as in training; prints per checkpoint the accuracy and mean loss of its predictions in
position buckets (token 0, 1-3, 4-15, 16-63, 64+), and the same for a freshly initialised compressor, whose digests
carry no information about the window: the gap between the two is what the digests contribute at each position.
Greedy reconstruction starts at token 0, so a weak first bucket derails everything after it. `--json PATH` also
writes the numbers. The frozen real-text dev set works as a corpus: `--data-dir evalsets/realtext_dev`.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..compressor import ContextCompressor
from .objectives import autoencoding_inputs, logits_at
from .sampling import SpanSampler

__all__ = ["BUCKETS", "bucket_names", "bucketed", "main", "position_accuracy", "position_stats", "position_table"]

BUCKETS = ((0, 1), (1, 4), (4, 16), (16, 64), (64, None))  # [a, b) window positions; None: to the end


@torch.no_grad()
def position_stats(comp: ContextCompressor, llm: Any, ids: torch.Tensor, batch: int = 8) -> dict[str, list[float]]:
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


def bucketed(values: Sequence[float]) -> list[float]:
    """The mean of `values` in each of :data:`BUCKETS` that starts inside them."""
    return [float(np.mean(values[a:b])) for a, b in BUCKETS if a < len(values)]


def bucket_names() -> list[str]:
    return [f"{a}" if b == a + 1 else f"{a}-{'' if b is None else b - 1}" for a, b in BUCKETS]


def position_accuracy(
    compressors: Mapping[str, ContextCompressor], llm: Any, ids: torch.Tensor
) -> dict[str, dict[str, list[float]]]:
    """:func:`position_stats` of each named compressor on the same windows `ids` (B, n)."""
    return {name: position_stats(comp, llm, ids) for name, comp in compressors.items()}


def position_table(results: Mapping[str, Mapping[str, list[float]]]) -> str:
    """A markdown table: per compressor, accuracy / loss (nats) overall and per bucket."""
    names = bucket_names()
    lines = [f"| compressor | all | {' | '.join(names)} |", "|---|---|" + "---|" * len(names)]
    for name, stats in results.items():
        cells = [f"{a:.3f} / {lo:.2f}" for a, lo in zip(bucketed(stats["acc"]), bucketed(stats["loss"]), strict=True)]
        overall = f"{np.mean(stats['acc']):.3f} / {np.mean(stats['loss']):.2f}"
        lines.append(f"| {name} | {overall} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    from ..compressor import load_compressor

    parser = argparse.ArgumentParser(
        prog="python -m icformer_rag.training.probes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoints", nargs="*", help="compressor checkpoints (default: the shipped one)")
    parser.add_argument("--data-dir", default=".data/corpus", help="a corpus (its held-out split is read)")
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--json", help="also write the per-position numbers here")
    args = parser.parse_args(argv)
    try:
        ids = torch.from_numpy(SpanSampler(args.data_dir, "heldout").leading_windows(args.windows, args.length))
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    torch.manual_seed(0)
    first, llm, tok = load_compressor(args.checkpoints[0] if args.checkpoints else None, device="cpu")
    comps = {name: ContextCompressor.from_pretrained(name, llm, tok) for name in args.checkpoints[1:]}
    comps = {args.checkpoints[0] if args.checkpoints else "shipped": first, **comps}
    comps["fresh (no information)"] = ContextCompressor.from_llm(llm, tok, copy.deepcopy(first.config), seed=0)
    print(f"{len(ids)} held-out windows of {args.length} tokens, teacher-forced; accuracy / loss (nats) by position")
    print(position_table({}))  # the header; then a row per compressor as it is done
    results = {}
    for name, comp in comps.items():
        results[name] = position_stats(comp, llm, ids)
        print(position_table({name: results[name]}).splitlines()[-1], flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"windows": len(ids), "length": args.length, "buckets": bucket_names(), "results": results}, f)


if __name__ == "__main__":
    main()
