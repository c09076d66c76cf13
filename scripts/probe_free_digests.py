"""Upper bound for auto-encoding: can the frozen LLM reconstruct a window from m free vectors?

`python scripts/probe_free_digests.py [--n 128] [--ratio 4] [--steps 300] [--windows 1]` optimises n/ratio
vectors directly (no compressor) for held-out windows of the corpus in .data/corpus, with the shipped
checkpoint's BEGIN/END/AE embeddings around them, then reports teacher-forced loss, accuracy and greedy
reconstruction accuracy. If free vectors reconstruct a window, the LLM can read 4x digests and the
compressor is what limits auto-encoding.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from icformer_rag.compressor import load_compressor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--ratio", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--windows", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--data-dir", default=".data/corpus")
    args = ap.parse_args()
    torch.manual_seed(0)
    comp, llm, _ = load_compressor(device="cpu", dtype=torch.float32)
    llm.requires_grad_(False)
    special = comp.model.special_embeddings.detach().float()[:, None, None]  # (3, 1, 1, C)
    table = llm.get_input_embeddings().weight
    rms = table.pow(2).mean().sqrt().item()
    data = np.memmap(f"{args.data_dir}/heldout.bin", dtype=np.uint16, mode="r")
    index = np.load(f"{args.data_dir}/heldout.idx.npy")
    rows = [r for r in index if r[1] >= args.n]
    rows = rows[:: max(1, len(rows) // args.windows)][: args.windows]
    m = args.n // args.ratio
    results = []
    for row in rows:
        ids = torch.tensor(data[row[0] : row[0] + args.n].astype(np.int64))[None]
        ctx = table[ids]
        z = torch.nn.Parameter(torch.randn(1, m, table.shape[1]) * rms)
        opt = torch.optim.Adam([z], lr=args.lr)

        def forward(vectors, ctx=ctx, ids=ids):
            inputs = torch.cat((special[0], vectors, special[1], special[2], ctx[:, :-1]), 1)
            hidden = llm.get_decoder()(inputs_embeds=inputs).last_hidden_state[:, m + 2 :]
            logits = llm.get_output_embeddings()(hidden)[0]
            return F.cross_entropy(logits, ids[0]), (logits.argmax(-1) == ids[0]).float().mean().item()

        start = time.time()
        for step in range(args.steps):
            loss, acc = forward(z)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 50 == 0:
                print(f"step {step}: loss {loss.item():.3f}, teacher-forced acc {acc:.3f}", flush=True)
        with torch.no_grad():
            inputs = torch.cat((special[0], z, special[1], special[2]), 1)
            out = []
            for _ in range(args.n):
                nxt = int(llm(inputs_embeds=inputs).logits[0, -1].argmax())
                out.append(nxt)
                inputs = torch.cat((inputs, table[nxt][None, None]), 1)
        greedy = (torch.tensor(out) == ids[0]).float().mean().item()
        results.append(
            dict(
                window_offset=int(row[0]),
                loss=loss.item(),
                teacher_forced_acc=acc,
                greedy_acc=greedy,
                seconds=round(time.time() - start, 1),
            )
        )
        print(json.dumps(results[-1]))
    print(json.dumps(dict(n=args.n, ratio=args.ratio, steps=args.steps, lr=args.lr, results=results)))


if __name__ == "__main__":
    main()
