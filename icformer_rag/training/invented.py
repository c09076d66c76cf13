"""Invented names spliced into auto-encoding windows (`TrainConfig.ae_invent`).

Why: the digests of the shipped checkpoint carry numbers but garble invented names ("Hiskutixshialt" for
"Zhutixshialt"; AE fact recall 0.775 at 512 tokens, docs/training.md session 14). Real training text spells its
names with common pieces that the frozen LLM half-predicts from the teacher-forced prefix, so auto-encoding never
has to carry a rare piece sequence exactly. Overwriting spans of a window with names made of random word pieces
makes those tokens unpredictable from anything but the digests. The names come from the tokenizer's own pieces,
not from any name list or syllable generator (neither the training records' nor the evaluation set's), and each
recurs in its window, as names do in a passage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

_HEAD = re.compile(r"^ [A-Z][a-z]{0,4}$")  # a word's first piece: a space, a capital, up to 4 lower-case letters
_TAIL = re.compile(r"^[a-z]{1,4}$")  # a continuation piece: 1-4 lower-case letters, no space


@dataclass(frozen=True)
class NamePieces:
    """Token ids that invented names are made of: a head piece, then 1-3 tail pieces."""

    heads: np.ndarray
    tails: np.ndarray

    @classmethod
    def of(cls, tokenizer: Any) -> NamePieces:
        """The pieces of `tokenizer`'s vocabulary that look like the start and the rest of a capitalised word.
        A ValueError if it has too few of either (a tokenizer without word pieces cannot spell names this way)."""
        heads, tails = [], []
        for i in range(len(tokenizer)):
            text = tokenizer.decode([i])
            if _HEAD.match(text):
                heads.append(i)
            elif _TAIL.match(text):
                tails.append(i)
        if len(heads) < 16 or len(tails) < 16:
            raise ValueError(
                f"the tokenizer has {len(heads)} name-head and {len(tails)} name-tail pieces; need 16 of each"
            )
        return cls(np.asarray(heads, dtype=np.int64), np.asarray(tails, dtype=np.int64))

    def name(self, rng: np.random.Generator) -> np.ndarray:
        """One invented name: a head piece and 1-3 tail pieces, drawn uniformly."""
        tails = self.tails[rng.integers(0, len(self.tails), size=int(rng.integers(1, 4)))]
        return np.concatenate(([self.heads[rng.integers(0, len(self.heads))]], tails))


def invent_names(windows: np.ndarray, rng: np.random.Generator, rate: float, pieces: NamePieces) -> np.ndarray:
    """A copy of `windows` (B, n) with about `rate` of each row's tokens overwritten by invented names.

    Each row gets its own names (one per ~8 overwritten tokens), each placed 1-3 times at random positions; a later
    name may overwrite part of an earlier one. A pure function of `rng`, so a resumed run draws the same windows.
    """
    if not 0 <= rate < 1:
        raise ValueError(f"rate must be in [0, 1), got {rate}")
    out = np.array(windows, dtype=np.int64, copy=True)
    if rate == 0:
        return out
    n = out.shape[1]
    for row in out:
        budget = int(round(rate * n))
        if budget < 2:
            continue
        names = [pieces.name(rng) for _ in range(max(1, budget // 8))]
        while budget > 0:
            name = names[int(rng.integers(0, len(names)))][:n]
            start = int(rng.integers(0, n - len(name) + 1))
            row[start : start + len(name)] = name
            budget -= len(name)
    return out
