"""ICFormerDigestTransform: an IngestionPipeline step that computes digests at indexing time."""

from __future__ import annotations

import asyncio
import pickle
import threading
from collections.abc import Sequence
from typing import Any

from llama_index.core.bridge.pydantic import BaseModel, Field, PrivateAttr
from llama_index.core.schema import BaseNode, TransformComponent

from icformer_rag import METADATA_KEY, ContextCompressor, DigestStore

from ._nodes import compress_nodes, hide_from_llm_and_embeddings, llm_compressor


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

    With ``pipeline.run(..., num_workers=N)`` each worker process gets a copy of the transform (the compressor and
    the LLM's embedding table and tokenizer are pickled: for a large LLM that is its whole embedding table per
    worker) and writes into the store's folder, where the main process reads them. This needs a store with a
    folder: a memory-only store is refused with a TypeError when the pipeline pickles the transform, since the
    digests that workers made would be lost with them.
    """

    fingerprint: str = Field(default="", description="Fingerprint of the compressor (part of the pipeline cache key).")
    store_folder: str | None = Field(default=None, description="Folder of the digest store; None for memory only.")
    _compressor: ContextCompressor = PrivateAttr()
    _store: DigestStore = PrivateAttr()

    def __init__(self, compressor: ContextCompressor, store: DigestStore | None = None, **kwargs: Any) -> None:
        store = store if store is not None else DigestStore()
        folder = str(store.folder) if store.folder is not None else None
        # pydantic fields: mypy without the pydantic plugin does not see them in __init__
        super().__init__(fingerprint=compressor.fingerprint, store_folder=folder, **kwargs)  # type: ignore[call-arg]
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
        for node, compressed in zip(nodes, compress_nodes(self._compressor, self._store, nodes), strict=True):
            node.metadata[METADATA_KEY] = compressed.key
            hide_from_llm_and_embeddings(node)
        return nodes

    # ------------------------------------------------------------------------ pickling (num_workers > 1)
    def __getstate__(self) -> dict[str, Any]:
        # LlamaIndex's BaseComponent drops private attributes that do not pickle (the compressor holds a lock, the
        # store an RLock): the copy in a worker would then fail with AttributeError. Both travel as plain state.
        if self._store.folder is None:
            raise TypeError(
                "ICFormerDigestTransform cannot be sent to worker processes (IngestionPipeline num_workers > 1) with "
                "a memory-only DigestStore: the digests the workers made would be lost with them. Give it a store "
                "with a folder (ICFormerDigestTransform(compressor, DigestStore('digests/'))) or run with "
                "num_workers=1"
            )
        state = BaseModel.__getstate__(self)
        store = self._store
        state["__pydantic_private__"] = {
            **(state.get("__pydantic_private__") or {}),
            "_compressor": _CompressorState(self._compressor),
            "_store": _StoreState(str(store.folder), str(store.device), store.max_cached),
        }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        private = dict(state.get("__pydantic_private__") or {})
        for name, value in private.items():
            if isinstance(value, (_CompressorState, _StoreState)):
                private[name] = value.restore()
        BaseModel.__setstate__(self, {**state, "__pydantic_private__": private})

    async def acall(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        return await asyncio.to_thread(self.__call__, nodes, **kwargs)


class _CompressorState:
    """A ContextCompressor as picklable state: its attributes less the lock and any compiled function (both made
    anew on the other side; a compiled compressor runs eagerly there)."""

    def __init__(self, compressor: ContextCompressor) -> None:
        attributes = {k: v for k, v in vars(compressor).items() if k not in ("_compiled", "_compiled_lock")}
        # Pickled to bytes here with the plain pickler: multiprocessing's own would send the tensors through torch's
        # shared-memory file descriptors, which a spawned pool never collects (the run hangs).
        self.blob = pickle.dumps(attributes, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self) -> ContextCompressor:
        compressor = ContextCompressor.__new__(ContextCompressor)
        vars(compressor).update(pickle.loads(self.blob), _compiled=None, _compiled_lock=threading.Lock())
        return compressor


class _StoreState:
    """A disk-backed DigestStore as picklable state: the folder and settings (its memory cache stays behind)."""

    def __init__(self, folder: str, device: str, max_cached: int | None) -> None:
        self.folder, self.device, self.max_cached = folder, device, max_cached

    def restore(self) -> DigestStore:
        return DigestStore(self.folder, device=self.device, max_cached=self.max_cached)
