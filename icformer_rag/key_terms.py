"""Key terms: a document's names and numbers as one plain-text line, to read beside its digests.

Digests keep what a name looks like more than its letters: from digests alone the default LLM often answers
with a name of the right shape but the wrong spelling. A short list of the text's capitalised names and numbers,
put after the digests as ordinary text, gives those letters back at the cost of ~50 tokens per document
(measured: README, "Key terms"). Extraction is a few regular expressions, no model: deterministic and fast
enough to run at query time on retrieved text.

The same name extractor picks the subjects of the training data's questions (`icformer_rag.data.instruct`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "KEY_TERMS_PREFIX",
    "MAX_KEY_TERMS",
    "append_key_terms",
    "key_terms",
    "key_terms_line",
    "names",
    "numbers",
    "with_key_terms",
]

KEY_TERMS_PREFIX = "Names and numbers in this document: "
MAX_KEY_TERMS = 24  # the setting measured; about 50 tokens on the dev set's ~320-token contexts

# A name word is a whole word: "PostgreSQL" or "McCarthy" are not cut into "Postgre" or "Mc".
NAME_WORD = r"(?<![\w'])(?:[A-Z][a-z]+(?:-[A-Z][a-z]+)?(?![\w'])|[A-Z]\.)"
NAME = re.compile(rf"{NAME_WORD}(?: (?:(?:de|da|van|von|der|of|the|la|le) )?{NAME_WORD})*")
# Capitalised words that start sentences or are too common to be worth naming.
NOT_NAMES = frozenset(
    "The A An In On At Of For And But Or If It Its This That These Those There Then They We He She His Her I"
    " You Your Our My When While Where Which Who What Why How As By From To With After Before During Since"
    " Although Though However Also Some Many Most Such All Each Every No Not One Two Three First Second"
    " Mr Mrs Dr St Section Chapter Part Book Act Scene Note See Return Returns New True False None"
    " January February March April May June July August September October November December Jan Feb Mar Apr"
    " Jun Jul Aug Sep Sept Oct Nov Dec Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
)
_PARTICLES = frozenset({"of", "the", "de", "da", "van", "von", "der", "la", "le"})
_NUMBER = re.compile(r"\b\d[\d,.]*\d\b|\b\d\b")


def names(text: str) -> list[str]:
    """Capitalised names in `text`, each once: multi-word names first, then by frequency, then by first
    appearance; common sentence openers and month or day names are left out."""
    found: dict[str, int] = {}
    for m in NAME.finditer(text):
        words = m.group(0).split()
        while words and words[0] in NOT_NAMES:
            words = words[1:]
        while words and words[-1] in _PARTICLES:
            words = words[:-1]
        name = " ".join(words)
        if len(name) >= 3 and name not in NOT_NAMES and not name.endswith("."):
            found[name] = found.get(name, 0) + 1
    return sorted(found, key=lambda n: (-(" " in n), -found[n], text.index(n)))


def numbers(text: str) -> list[str]:
    """The numbers written in digits in `text` (years, counts, amounts), each once, in order of appearance."""
    return list(dict.fromkeys(m.group(0).rstrip(".,") for m in _NUMBER.finditer(text)))


def key_terms(text: str, max_terms: int = MAX_KEY_TERMS) -> list[str]:
    """Key terms of `text`: its first `max_terms // 2` names (see :func:`names`), then its numbers, at most
    `max_terms` in all. Names never take more than half the slots, so a number-heavy text keeps its numbers;
    a text with few numbers gives a shorter list (the setting that was measured)."""
    if max_terms < 0:
        raise ValueError(f"max_terms must be >= 0, got {max_terms}")
    return (names(text)[: max_terms // 2] + numbers(text))[:max_terms]


def key_terms_line(text: str, max_terms: int = MAX_KEY_TERMS) -> str:
    """``"Names and numbers in this document: Ada Krenn; Velmora; 1723."``, or ``""`` when `text` has none."""
    terms = key_terms(text, max_terms)
    return KEY_TERMS_PREFIX + "; ".join(terms) + "." if terms else ""


# Where the line goes: SoftPromptLM joins a prompt's contexts with newlines, so [digest, line] reads as the digest
# followed by "\n" + the line, and so does a marker followed by "\n" + the line inside a document's text.
def with_key_terms(contexts: Sequence[Any], texts: Sequence[str | None]) -> list[Any]:
    """`contexts` (digests, usually) with each one followed by the key-terms line of its text, for
    :meth:`SoftPromptLM.generate`; a text with no names or numbers, or None (no text at hand), adds nothing."""
    if len(contexts) != len(texts):
        raise ValueError(f"{len(contexts)} contexts but {len(texts)} texts")
    out: list[Any] = []
    for context, text in zip(contexts, texts, strict=True):
        out.append(context)
        if text is not None and (line := key_terms_line(text)):
            out.append(line)
    return out


def append_key_terms(marker: str, text: str) -> str:
    """A digest marker followed by "\\n" + the key-terms line of `text` (the marker alone when there is none):
    the adapters' document text with `key_terms=True`."""
    line = key_terms_line(text)
    return f"{marker}\n{line}" if line else marker
