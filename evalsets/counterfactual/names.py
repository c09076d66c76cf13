"""Invented words for the counterfactual evaluation set, from this folder's own syllable inventory.

The inventory differs on purpose from the training generator's (``icformer_rag/data/counterfactual.py``) so
the evaluation set's names are not drawn from the distribution training sees. Every word is checked against a
blocklist (the source texts' words, the package's data and sample files) and must split into at least two
tokens of the default tokenizer: a single-token word is almost always a real word or a known name.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["NameBank", "repo_blocklist"]

# Onsets, nuclei and codas chosen to sound pronounceable but unlike English or the training inventory.
_ONSETS = ("c", "ch", "qu", "sh", "w", "x", "y", "ph", "v", "gl", "pl", "sl", "sn", "tw", "wh", "zh", "b", "m",
           "n", "t", "l", "r", "d", "k")  # fmt: skip
_NUCLEI = ("ia", "oa", "eo", "ua", "o", "a", "i", "e", "u", "io")
_CODAS = ("", "", "", "x", "sh", "nt", "lv", "rn", "q", "z", "lt", "mb", "ck", "p")

TokenCount = Callable[[str], int]


def repo_blocklist(root: str | Path) -> set[str]:
    """Lower-cased words of ``icformer_rag/data/*.py`` and ``icformer_rag/samples/*``: never emitted."""
    base = Path(root) / "icformer_rag"
    words: set[str] = set()
    for path in sorted([*(base / "data").glob("*.py"), *(base / "samples").glob("*")]):
        if path.is_file():
            words.update(w.lower() for w in re.findall(r"[A-Za-z]+", path.read_text(encoding="utf-8", errors="ignore")))
    return words


class NameBank:
    """Draws unique invented words; ``used`` keeps them unique across the whole evaluation set."""

    def __init__(self, blocklist: Iterable[str], token_count: TokenCount) -> None:
        self.blocked = {w.lower() for w in blocklist}
        self.token_count = token_count
        self.used: set[str] = set()

    def word(self, rng: random.Random, syllables: int | None = None) -> str:
        """A fresh capitalised invented word of 2-3 syllables (or ``syllables``)."""
        for _ in range(500):
            n = syllables or rng.choice((2, 2, 3))
            parts = []
            for i in range(n):
                coda = rng.choice(_CODAS) if i == n - 1 else rng.choice(_CODAS[:6])
                parts.append(rng.choice(_ONSETS) + rng.choice(_NUCLEI) + coda)
            w = "".join(parts)
            # 5-12 letters: long enough to be unlikely real, short enough to read as a name.
            if not 5 <= len(w) <= 12 or w in self.used or w in self.blocked or re.search(r"(.)\1\1", w):
                continue
            if self.token_count(" " + w.capitalize()) < 2:
                continue
            self.used.add(w)
            return w.capitalize()
        raise RuntimeError("name generator exhausted; widen the syllable inventory")

    def acronym(self, rng: random.Random, length: int) -> str:
        """A fresh upper-case acronym of ``length`` letters (at least 2)."""
        for attempt in range(2000):
            # short acronyms run out (20 x 20 two-letter ones); grow by a letter every 200 attempts
            a = "".join(rng.choice("BCDFGHJKLMNPQRSTVWXZ") for _ in range(max(2, length) + attempt // 200))
            if a.lower() not in self.used and a.lower() not in self.blocked:
                self.used.add(a.lower())
                return a
        raise RuntimeError("acronym generator exhausted")

    def person(self, rng: random.Random) -> str:
        """A two-word invented personal name."""
        return f"{self.word(rng, 2)} {self.word(rng)}"
