"""ICFormerNodePostprocessor: retrieved nodes -> digest markers, the digests in a DigestStore."""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from icformer_rag.compressor import ContextCompressor
from icformer_rag.key_terms import append_key_terms
from icformer_rag.store import DigestStore, digest_key, marker_for

from ._nodes import (
    METADATA_DIGESTS,
    METADATA_HIT,
    METADATA_KEY,
    METADATA_TOKENS,
    compress_nodes,
    hide_from_llm_and_embeddings,
    llm_compressor,
)


class ICFormerNodePostprocessor(BaseNodePostprocessor):
    """Compresses retrieved nodes into IC-Former digests that :class:`ICFormerLLM` reads.

    All nodes of a query are compressed in one batch (nodes already in the store, e.g. by
    :class:`ICFormerDigestTransform` at indexing time, are not compressed again). Each returned node is a copy
    with the same id, metadata, relationships and score; its text becomes a marker ``⟦icf:<key>.<tag>⟧`` (valid in
    this process only) and its metadata gains `icformer_digest_key`, `icformer_cache_hit`, `icformer_tokens` and
    `icformer_digests` (hidden from the LLM and the embedder). The query is not used: digests do not depend on it. With
    `key_terms=True` the marker is followed by a plain line of the node's names and numbers, which the LLM reads
    as text beside the digests (about 50 tokens a node; better answers on names, dates and counts).

    Example:
        ```python
        llm = ICFormerLLM.from_default()
        engine = index.as_query_engine(llm=llm, node_postprocessors=[ICFormerNodePostprocessor.for_llm(llm)])
        ```
    """

    key_terms: bool = Field(
        default=False, description="Append a line of the node's names and numbers after its digest marker."
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
        texts, digests, hits = compress_nodes(self._compressor, self._store, [n.node for n in nodes])
        out = []
        for item, text, digest, hit in zip(nodes, texts, digests, hits, strict=True):
            key = digest_key(digest)
            node = item.node.model_copy(deep=False)
            node.metadata = {
                **item.node.metadata,
                METADATA_KEY: key,
                METADATA_HIT: hit,
                METADATA_TOKENS: digest.num_tokens,
                METADATA_DIGESTS: len(digest),
            }
            node.excluded_llm_metadata_keys = list(item.node.excluded_llm_metadata_keys)
            node.excluded_embed_metadata_keys = list(item.node.excluded_embed_metadata_keys)
            hide_from_llm_and_embeddings(node)
            node.set_content(append_key_terms(marker_for(key), text) if self.key_terms else marker_for(key))
            out.append(NodeWithScore(node=node, score=item.score))
        return out

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        # One worker-thread hop for the whole batch, so the event loop is never blocked by compression.
        return await asyncio.to_thread(self._postprocess_nodes, nodes, query_bundle)
