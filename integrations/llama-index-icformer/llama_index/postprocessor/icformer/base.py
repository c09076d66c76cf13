"""ICFormerNodePostprocessor: retrieved nodes -> digest markers, the digests in a DigestStore."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from icformer_rag import ContextCompressor, DigestStore, find_markers, fit_positions

from ._nodes import (
    LAST_STEP,
    check_engine,
    compress_nodes,
    hide_from_llm_and_embeddings,
    llm_compressor,
    node_texts,
)


class ICFormerNodePostprocessor(BaseNodePostprocessor):
    """Compresses retrieved nodes into IC-Former digests that :class:`ICFormerLLM` reads.

    All nodes of a query are compressed in one batch (nodes already in the store, e.g. by
    :class:`ICFormerDigestTransform` at indexing time, are not compressed again). Each returned node is a copy
    with the same id, metadata, relationships and score; its text becomes a marker ``⟦icf:<key>.<tag>⟧`` (valid in
    this process only) and its metadata gains `icformer_digest_key`, `icformer_cache_hit`, `icformer_tokens`,
    `icformer_digests`, `icformer_positions` (prompt positions the LLM reads for its digest: the vectors,
    BEGIN and END) and `icformer_text` (the original text, for citations: :func:`restore_text` puts it back into
    a response's `source_nodes`), all hidden from the LLM and the embedder.
    The query is not used: digests do not depend on it. With
    `key_terms=True` the marker is followed by a plain line of the node's names and numbers, which the LLM reads
    as text beside the digests (about 50 tokens a node; better answers on names, dates and counts).

    It is the **last node postprocessor, before** :class:`ICFormerLLM` over the same store: only that LLM reads
    markers as digests. Inside a query or chat engine, a text-reading postprocessor after it (a reranker, a
    sentence optimizer, a metadata replacement), an engine LLM that is not an ICFormerLLM (a MockLLM, OpenAI...)
    or one over another store is an error naming the fix (``SimilarityPostprocessor`` and ``LongContextReorder``
    may follow); there the engine's prompt helpers are also set to count digest positions (see
    :attr:`ICFormerLLM.tokenizer`). A node that is already a marker is an error (compressed twice).

    `max_context_positions` caps the prompt positions all nodes of a query may use together (like LLMLingua's
    `target_token`): the lowest-scored nodes (the last ones, where nodes have no scores) are dropped first,
    with a warning, until the rest fit; the survivors keep their order.

    Example:
        ```python
        llm = ICFormerLLM.from_default()
        engine = index.as_query_engine(llm=llm, node_postprocessors=[ICFormerNodePostprocessor.for_llm(llm)])
        ```
    """

    key_terms: bool = Field(
        default=False, description="Append a line of the node's names and numbers after its digest marker."
    )
    max_context_positions: int | None = Field(
        default=None,
        ge=1,
        description="Most prompt positions the nodes of one query may use together; lowest-ranked dropped first.",
    )
    _compressor: ContextCompressor = PrivateAttr()
    _store: DigestStore = PrivateAttr()

    def __init__(self, compressor: ContextCompressor, store: DigestStore | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._compressor = compressor
        self._store = store if store is not None else DigestStore()

    @classmethod
    def for_llm(cls, llm: Any, **kwargs: Any) -> ICFormerNodePostprocessor:
        """A postprocessor writing into `llm`'s digest store with its compressor."""
        return cls(llm_compressor(llm), llm.store, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "ICFormerNodePostprocessor"

    @property
    def store(self) -> DigestStore:
        return self._store

    @property
    def compressor(self) -> ContextCompressor:
        return self._compressor

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if not isinstance(nodes, (list, tuple)):
            raise TypeError("postprocess_nodes() takes a list of NodeWithScore")
        for i, n in enumerate(nodes):
            if not isinstance(n, NodeWithScore):
                raise TypeError(f"node {i} is a {type(n).__name__}, not a NodeWithScore")
        check_engine(self)
        for i, text in enumerate(node_texts([n.node for n in nodes])):
            if find_markers(text):
                raise ValueError(
                    f"node {i} is already compressed (its text holds a digest marker): {LAST_STEP}; "
                    "compress each node once"
                )
        compressed = compress_nodes(self._compressor, self._store, [n.node for n in nodes], self.key_terms)
        out = []
        for item, c in zip(nodes, compressed, strict=True):
            node = item.node.model_copy(deep=False)
            node.metadata = {**item.node.metadata, **c.metadata}
            node.excluded_llm_metadata_keys = list(item.node.excluded_llm_metadata_keys)
            node.excluded_embed_metadata_keys = list(item.node.excluded_embed_metadata_keys)
            hide_from_llm_and_embeddings(node)
            node.set_content(c.content)
            out.append(NodeWithScore(node=node, score=item.score))
        return self._limit(out, [c.positions for c in compressed])

    def _limit(self, nodes: list[NodeWithScore], need: list[int]) -> list[NodeWithScore]:
        """`nodes` less the lowest-ranked (by score, else the last), until they fit `max_context_positions`, with a
        warning; the survivors keep their order. Two nodes are counted one separator position apart."""
        cap = self.max_context_positions
        if cap is None or not nodes:
            return nodes
        rank = list(range(len(nodes)))
        if all(n.score is not None for n in nodes):
            rank.sort(key=lambda i: -float(nodes[i].score or 0.0))  # stable: equal scores keep their order
        keep, used = fit_positions(need, cap, rank)
        if len(keep) < len(nodes):
            warnings.warn(
                f"ICFormerNodePostprocessor: the {len(nodes)} nodes need {sum(need)} prompt positions, over "
                f"max_context_positions={cap}; dropped the {len(nodes) - len(keep)} lowest-ranked, kept {len(keep)} "
                f"({used} positions)",
                UserWarning,
                stacklevel=2,
            )
        return [nodes[i] for i in keep]

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        check_engine(self)  # here: the engine is not on the worker thread's stack
        # One worker-thread hop for the whole batch, so the event loop is never blocked by compression.
        return await asyncio.to_thread(self._postprocess_nodes, nodes, query_bundle)
