"""ICFormerDigestTransform: an IngestionPipeline step that computes digests at indexing time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.schema import BaseNode, TransformComponent

from icformer_rag.compressor import ContextCompressor
from icformer_rag.store import DigestStore, digest_key

from ._nodes import METADATA_KEY, compress_nodes, hide_from_llm_and_embeddings, llm_compressor


class ICFormerDigestTransform(TransformComponent):
    """Fills a :class:`DigestStore` with the digests of the nodes passing through an `IngestionPipeline`.

    Put it after the node parser: the nodes come out unchanged except for an `icformer_digest_key` metadata entry
    (hidden from the LLM and the embedder), and their digests are in the store, so an
    :class:`ICFormerNodePostprocessor` over the same store does no compression at query time.

    Example:
        ```python
        pipeline = IngestionPipeline(transformations=[SentenceSplitter(), ICFormerDigestTransform.for_llm(llm),
                                                      embed_model])
        index = VectorStoreIndex(pipeline.run(documents=docs), embed_model=embed_model)
        ```
    """

    fingerprint: str = Field(default="", description="Fingerprint of the compressor (part of the pipeline cache key).")
    store_folder: str | None = Field(default=None, description="Folder of the digest store; None for memory only.")
    _compressor: ContextCompressor = PrivateAttr()
    _store: DigestStore = PrivateAttr()

    def __init__(self, compressor: ContextCompressor, store: DigestStore | None = None, **kwargs: Any) -> None:
        store = store if store is not None else DigestStore()
        folder = str(store.folder) if store.folder is not None else None
        super().__init__(fingerprint=compressor.fingerprint, store_folder=folder, **kwargs)
        self._compressor = compressor
        self._store = store

    @classmethod
    def for_llm(cls, llm: Any, **kwargs: Any) -> ICFormerDigestTransform:
        """A transform writing into `llm`'s digest store with its compressor."""
        return cls(llm_compressor(llm), llm.store, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "ICFormerDigestTransform"

    @property
    def store(self) -> DigestStore:
        return self._store

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        _, digests, _ = compress_nodes(self._compressor, self._store, nodes)
        for node, digest in zip(nodes, digests, strict=True):
            node.metadata[METADATA_KEY] = digest_key(digest)
            hide_from_llm_and_embeddings(node)
        return nodes

    async def acall(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        return await asyncio.to_thread(self.__call__, nodes, **kwargs)
