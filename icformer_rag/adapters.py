"""What the LangChain and LlamaIndex adapters share, written once: a retrieved text -> its digest marker and metadata,
the cap on prompt positions, and the check that the compressor step runs last.

An adapter's compressor step (``langchain_icformer.ICFormerCompressor``, ``llama_index.postprocessor.icformer``)
calls :func:`compress_texts` on the texts of its documents and puts each :class:`CompressedText`'s `content` where
the text was and its `metadata` beside the document's own; :func:`fit_positions` keeps the best-ranked documents that
fit a cap; :func:`find_pipeline` finds the pipeline that runs the step and what runs after it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from .key_terms import append_key_terms
from .prompt import marker_for
from .store import digest_key

if TYPE_CHECKING:
    from .compressor import ContextCompressor
    from .store import BaseDigestStore

__all__ = [
    "METADATA_DIGESTS",
    "METADATA_HIT",
    "METADATA_KEY",
    "METADATA_KEYS",
    "METADATA_POSITIONS",
    "METADATA_TEXT",
    "METADATA_TOKENS",
    "CompressedText",
    "compress_texts",
    "find_pipeline",
    "require_last_step",
    "fit_positions",
]

METADATA_KEY = "icformer_digest_key"  # the digest's key in the store
METADATA_HIT = "icformer_cache_hit"  # whether the digest was in the store already
METADATA_TOKENS = "icformer_tokens"  # the text's tokens
METADATA_DIGESTS = "icformer_digests"  # the digest's vectors
METADATA_TEXT = "icformer_text"  # the original text, for citations, display and other models
METADATA_POSITIONS = "icformer_positions"  # prompt positions of the digest: the vectors + BEGIN/END
METADATA_KEYS = (METADATA_KEY, METADATA_HIT, METADATA_TOKENS, METADATA_DIGESTS, METADATA_TEXT, METADATA_POSITIONS)


@dataclass(frozen=True)
class CompressedText:
    """One compressed text: what a document's text becomes and the metadata it gains."""

    content: str
    """The digest marker ``⟦icf:<key>.<tag>⟧``, followed by "\\n" + the text's key-terms line with `key_terms`."""
    metadata: dict[str, Any]
    """The `icformer_*` entries (:data:`METADATA_KEYS`): key, cache hit, tokens, digest vectors, original text and
    the digest's prompt positions."""
    positions: int
    """Prompt positions the LLM reads for it: the digest's vectors, BEGIN/END and the key-terms line's tokens."""

    @property
    def key(self) -> str:
        return self.metadata[METADATA_KEY]


def compress_texts(
    compressor: ContextCompressor, store: BaseDigestStore, texts: Sequence[str], key_terms: bool = False
) -> list[CompressedText]:
    """`texts` compressed through `store` (one batched compression of the texts it lacks), in order, each as its
    marker and metadata. With `key_terms` each marker is followed by a plain line of the text's names and numbers,
    read as text beside the digest."""
    digests, hits = store.compress_cached(compressor, texts)
    out = []
    for text, digest, hit in zip(texts, digests, hits, strict=True):
        key = digest_key(digest)
        marker = marker_for(key)
        content = append_key_terms(marker, text) if key_terms else marker
        extra = content[len(marker) :]  # the key-terms line, read as text
        positions = len(digest) + 2 + (len(compressor.tokenize([extra])[0]) if extra else 0)
        metadata = {
            METADATA_KEY: key,
            METADATA_HIT: hit,
            METADATA_TOKENS: digest.num_tokens,
            METADATA_DIGESTS: len(digest),
            METADATA_TEXT: text,
            METADATA_POSITIONS: len(digest) + 2,
        }
        out.append(CompressedText(content, metadata, positions))
    return out


def fit_positions(positions: Sequence[int], cap: int, ranks: Sequence[int] | None = None) -> tuple[list[int], int]:
    """Which items fit in `cap` prompt positions together, taken best first (in the order of `ranks`, a list of
    indices; default: as given) until the next does not fit, one separator position between two: their indices, in
    the order given, and the positions they use."""
    used = 0
    kept: list[int] = []
    for i in range(len(positions)) if ranks is None else ranks:
        need = positions[i] + (1 if kept else 0)
        if used + need > cap:
            break
        used += need
        kept.append(i)
    return sorted(kept), used


def find_pipeline(step: Any, attr: str, max_frames: int, skip: int = 2) -> tuple[Any, list[str]] | None:
    """The object whose list attribute `attr` holds `step`, found in the `self` of one of the `max_frames` frames
    above the caller of the caller (`skip` frames up from here), with the type names of the steps after `step`'s
    last occurrence; None when there is none (e.g. the step was called directly).

    LangChain's DocumentCompressorPipeline and LlamaIndex's query engines call their steps from a method of the
    pipeline object, which holds the steps in a list; the order is known only there, so the adapters' check that
    their step runs last looks a few frames up for it. A heuristic: when no such object is found, nothing is
    checked."""
    frame: FrameType | None
    try:
        frame = sys._getframe(skip + 1)
    except ValueError:  # called from the top of a stack: no pipeline around it
        return None
    for _ in range(max_frames):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        steps = getattr(owner, attr, None) if owner is not step else None
        if isinstance(steps, (list, tuple)) and any(s is step for s in steps):
            at = max(i for i, s in enumerate(steps) if s is step)
            return owner, [type(s).__name__ for s in steps[at + 1 :]]
        frame = frame.f_back
    return None


def require_last_step(
    step: Any, attr: str, *, rule: str, order_only: frozenset[str], max_frames: int, skip: int = 2
) -> Any | None:
    """The adapters' order check, written once: find the pipeline running `step` (:func:`find_pipeline`, `skip`
    frames up from the caller) and raise ValueError, `rule` plus the fix, if a step that reads text runs after it
    (any step whose type name is not in `order_only`). Returns the pipeline object, or None when none was found."""
    found = find_pipeline(step, attr, max_frames, skip + 1)  # + 1: this function's own frame
    if found is None:
        return None
    owner, later = found
    after = [name for name in later if name not in order_only]
    if after:
        raise ValueError(
            f"{rule}. This {type(owner).__name__} runs {', '.join(after)} after it: move "
            f"{'them' if len(after) > 1 else 'it'} before {type(step).__name__}"
        )
    return owner
