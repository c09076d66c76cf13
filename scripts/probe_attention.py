"""Where do a compressor's digests look? `python scripts/probe_attention.py [CHECKPOINT]`

For 8 held-out 512-token windows, prints per block the attention mass digest j puts on its own tokens
ratio*j .. ratio*j+ratio-1 (uniform attention would give ratio / (n + m)), within 8 tokens of them, on the
digests, and the attention entropy. A compressor that has learned what each digest stands for puts most of
some heads' mass on its own tokens.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F

from icformer_rag import modeling
from icformer_rag.compressor import load_compressor


def capture_attention(model: modeling.ICFormer, embeds: torch.Tensor, num_digests: int) -> list[torch.Tensor]:
    """Attention probabilities (B, H, M, N+M) of every block for one no-grad forward of `model`."""
    caught = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None):
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
        caught.append(scores.softmax(-1))
        return sdpa(q, k, v, attn_mask=attn_mask)

    modeling.F.scaled_dot_product_attention = spy
    try:
        with torch.no_grad():
            model(embeds, None, num_digests=num_digests)
    finally:
        modeling.F.scaled_dot_product_attention = sdpa
    return caught


def main() -> None:
    checkpoint = sys.argv[1] if len(sys.argv) > 1 else None
    comp, llm, _ = load_compressor(checkpoint, device="cpu", dtype=torch.float32)
    model = comp.model.eval()
    n, r = model.config.window_tokens, model.config.ratio
    m = n // r
    data = np.memmap(".data/corpus/heldout.bin", dtype=np.uint16, mode="r")
    rows = [row for row in np.load(".data/corpus/heldout.idx.npy") if row[1] >= n][:8]
    ids = torch.tensor(np.stack([data[row[0] : row[0] + n].astype(np.int64) for row in rows]))
    caught = capture_attention(model, llm.get_input_embeddings()(ids), m)
    for b, att in enumerate(caught):  # (B, H, M, N+M)
        ctx = att[..., :n]
        own = torch.stack([ctx[:, :, j, r * j : r * j + r].sum(-1) for j in range(m)], -1)  # (B, H, M)
        near = torch.stack([ctx[:, :, j, max(0, r * j - 8) : r * j + r + 8].sum(-1) for j in range(m)], -1)
        entropy = -(att.clamp_min(1e-12).log() * att).sum(-1).mean().item()
        print(
            f"block {b + 1}: mass on own {r} tokens {own.mean():.3f} (uniform {r / (n + m):.3f}), within 8 tokens "
            f"{near.mean():.3f}, on digests {att[..., n:].sum(-1).mean():.3f}, entropy {entropy:.2f} nats "
            f"(uniform {np.log(n + m):.2f}); per head own mass {[round(x, 3) for x in own.mean((0, 2)).tolist()]}"
        )


if __name__ == "__main__":
    main()
