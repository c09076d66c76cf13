"""Cutting token streams into windows and packing windows into padded batches under a token budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """One window: `doc` is the document's index in its batch, `index` the window's place in it."""

    doc: int
    index: int
    ids: tuple[int, ...]


def split_windows(ids: Sequence[int], window_tokens: int) -> list[list[int]]:
    """Cut `ids` into consecutive windows of `window_tokens` (the last may be shorter). Nothing is dropped."""
    if window_tokens < 1:
        raise ValueError(f"window_tokens must be positive, got {window_tokens}")
    return [list(ids[i : i + window_tokens]) for i in range(0, len(ids), window_tokens)]


def documents_to_windows(docs: Sequence[Sequence[int]], window_tokens: int) -> list[Window]:
    """All windows of all documents, in document order."""
    return [
        Window(doc=d, index=w, ids=tuple(chunk))
        for d, ids in enumerate(docs)
        for w, chunk in enumerate(split_windows(ids, window_tokens))
    ]


def plan_batches(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Group item indices into batches whose padded size (items x longest) stays within the budget.

    Items are sorted by length (longest first) so that similar lengths share a batch and little compute
    goes to padding. An item longer than the budget still gets a batch of its own.
    """
    if max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be positive, got {max_batch_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1) * longest > max_batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
