"""Can a compressor layout learn which tokens each digest stands for? A cheap proxy without the LLM.

`PYTHONPATH=. python scripts/probe_locality.py [--steps 300] [--n 128]` trains, for each layout variant, a
fresh IC-Former (the default LLM's shape, its frozen word embeddings as input) together with a linear readout
that must recover digest j's own tokens ratio*j .. ratio*j+ratio-1 (the trainer's `--readout-weight` head,
`icformer_rag.training.readout`), on real corpus windows. It prints the readout's token accuracy over training and the
attention mass each digest puts on its own tokens at the end. The frozen LLM is not run, so this measures only
how quickly a layout learns locality, the step the real auto-encoding training has not made.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from probe_attention import capture_attention  # scripts/ is on sys.path when run as a script

from icformer_rag import modeling
from icformer_rag.config import ICFormerConfig
from icformer_rag.llm import load_llm
from icformer_rag.training.readout import ReadoutHead

VARIANTS = {
    "after": dict(digest_positions="after"),
    "spread": dict(digest_positions="spread"),
    "spread+local6": dict(digest_positions="spread", local_heads=6),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--data-dir", default=".data/corpus")
    args = ap.parse_args()
    llm, _ = load_llm(device="cpu", dtype=torch.float32)
    table = llm.get_input_embeddings().weight.detach()
    data = np.memmap(f"{args.data_dir}/train.bin", dtype=np.uint16, mode="r")
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(data) - args.n, size=(args.steps, args.batch))
    results = {}
    for name in args.variants:
        torch.manual_seed(0)
        cfg = ICFormerConfig.for_llm(llm.config, **VARIANTS[name])
        model = modeling.ICFormer(cfg)
        model.reset_parameters(embedding_rms=float(table.pow(2).mean().sqrt()))
        r, m = cfg.ratio, args.n // cfg.ratio
        readout = ReadoutHead(cfg.hidden_size, r)
        opt = torch.optim.AdamW([*model.parameters(), *readout.parameters()], lr=args.lr, weight_decay=0.0)
        curve, start = [], time.time()
        for step in range(args.steps):
            ids = torch.tensor(np.stack([data[s : s + args.n].astype(np.int64) for s in starts[step]]))
            out = readout(model(table[ids], None, num_digests=m), ids, table)  # the trainer's readout loss
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            if step % 25 == 0 or step == args.steps - 1:
                acc = out.correct / out.num_tokens
                curve.append((step, round(out.loss.item(), 3), round(acc, 3)))
                print(name, curve[-1], flush=True)
        own = attention_on_own_tokens(model, table, ids, m, r)
        results[name] = dict(curve=curve, own_token_attention=own, seconds=round(time.time() - start, 1))
        print(name, "attention mass on own tokens per block:", own, flush=True)
    print(json.dumps(dict(args=vars(args), results=results)))


def attention_on_own_tokens(model, table, ids, m, r) -> list[float]:
    """Per block, the mean attention mass digest j puts on its own tokens r*j .. r*j+r-1."""
    return [
        round(float(torch.stack([a[:, :, j, r * j : r * j + r].sum(-1) for j in range(m)]).mean()), 3)
        for a in capture_attention(model, table[ids], m)
    ]


if __name__ == "__main__":
    main()
