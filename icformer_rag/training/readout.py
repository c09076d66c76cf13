"""Auxiliary readout loss: tell each digest which tokens it stands for, without running the LLM.

Digest j of a window replaces tokens ratio*j .. ratio*j+ratio-1. A linear head maps the digest to `ratio` slot
vectors, and slot i is scored against the frozen LLM's word-embedding table as a prediction of token
ratio*j+i. Trained beside the LLM's auto-encoding loss, this gives every digest a direct gradient towards its
own tokens: the LLM's loss alone is dominated by its own next-token prediction and taught the shipped
compressor the window's topic, not which digest holds which words (docs/training.md, session 2: attention
mass on own tokens at chance). The head is used in training only; inference never loads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ReadoutOutput:
    loss: torch.Tensor  # mean cross-entropy over all window tokens, nats
    correct: int  # tokens whose slot's best-scoring word is the token itself
    num_tokens: int


class ReadoutHead(nn.Module):
    """`ratio` linear slot projections of a digest, scored against a (frozen) embedding table.

    `row_fraction` < 1 scores only the first ceil(fraction * B) windows of a batch (windows are drawn at random,
    so any rows are a fair sample): the 49k-way scoring of every slot is most of the head's cost, and once the
    head's accuracy has saturated a quarter of the rows keeps the signal.
    """

    def __init__(self, hidden_size: int, ratio: int, row_fraction: float = 1.0) -> None:
        super().__init__()
        if not 0 < row_fraction <= 1:
            raise ValueError(f"row_fraction must be in (0, 1], got {row_fraction}")
        self.ratio = ratio
        self.row_fraction = row_fraction
        self.proj = nn.Linear(hidden_size, ratio * hidden_size, bias=False)

    def forward(self, digests: torch.Tensor, window_ids: torch.Tensor, table: torch.Tensor) -> ReadoutOutput:
        """digests (B, m, C) of windows `window_ids` (B, n) with m = ceil(n / ratio); table (V, C)."""
        rows = math.ceil(self.row_fraction * digests.shape[0])
        digests, window_ids = digests[:rows], window_ids[:rows]
        B, m, C = digests.shape
        n = window_ids.shape[1]
        if m * self.ratio < n:
            raise ValueError(f"{m} digests cannot stand for {n} tokens at ratio {self.ratio}")
        slots = self.proj(digests).view(B, m * self.ratio, C)[:, :n]  # slot s predicts token s
        if not torch.is_autocast_enabled(slots.device.type):
            slots = slots.to(table.dtype)
        logits = F.linear(slots, table).flatten(0, 1)  # (B * n, V)
        targets = window_ids.flatten()
        loss = F.cross_entropy(logits.float(), targets)
        correct = int((logits.argmax(-1) == targets).sum())
        return ReadoutOutput(loss=loss, correct=correct, num_tokens=targets.numel())
