"""ICFormerCompressor: retrieved documents -> digest markers, the digests in a DigestStore."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field

from icformer_rag.compressor import ContextCompressor
from icformer_rag.key_terms import append_key_terms
from icformer_rag.store import DigestStore, digest_key, marker_for

METADATA_KEY = "icformer_digest_key"
METADATA_HIT = "icformer_cache_hit"
METADATA_TOKENS = "icformer_tokens"
METADATA_DIGESTS = "icformer_digests"


class ICFormerCompressor(BaseDocumentCompressor):
    """Compresses retrieved documents into IC-Former digests that :class:`ChatICFormer` reads.

    Every document of a call is compressed in one batch (documents already in the store are not compressed
    again). Each returned `Document` keeps the original's `id` and metadata; its `page_content` becomes a
    marker ``⟦icf:<key>.<tag>⟧`` that the chat model, sharing the same `store`, replaces with the digest vectors
    (in this process only: the tag is an HMAC under a per-process secret, so text cannot forge a marker), and
    its metadata gains `icformer_digest_key`, `icformer_cache_hit`, `icformer_tokens` (source tokens) and
    `icformer_digests` (digest vectors). Compression does not depend on the query, so a digest is made once
    per text and compressor, and can be made ahead of time with :meth:`index_documents`. With
    `key_terms=True` the marker is followed by a plain line of the document's names and numbers, which the LLM
    reads as text beside the digests (about 50 tokens a document; better answers on names, dates and counts).

    Setup:
        ```bash
        pip install "icformer-rag[langchain]"
        ```

    Instantiate:
        ```python
        from langchain_icformer import ChatICFormer, ICFormerCompressor

        chat = ChatICFormer.from_default(max_tokens=128)
        compressor = ICFormerCompressor.for_chat_model(chat)  # same compressor, same digest store
        ```

    Invoke:
        ```python
        docs = compressor.compress_documents(retrieved_docs, "Who founded Velmora?")
        docs[0].page_content        # '⟦icf:3f0c….9a1e…⟧'
        docs[0].metadata            # {..., 'icformer_cache_hit': False, 'icformer_tokens': 57, ...}
        ```

    Async:
        ```python
        docs = await compressor.acompress_documents(retrieved_docs, "Who founded Velmora?")
        ```
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    compressor: ContextCompressor
    """The IC-Former compressor (holds the LLM's tokenizer and embedding table)."""
    store: DigestStore = Field(default_factory=DigestStore)
    """Where digests are kept and looked up; share it with the chat model. A store with a folder persists."""
    key_terms: bool = False
    """Append "\\n" + the document's names-and-numbers line (`icformer_rag.key_terms`) after its marker."""

    @classmethod
    def for_chat_model(cls, chat_model: Any, **kwargs: Any) -> ICFormerCompressor:
        """A compressor writing into `chat_model`'s digest store with its compressor."""
        if chat_model.lm.compressor is None:
            raise ValueError("the chat model's SoftPromptLM has no compressor")
        return cls(compressor=chat_model.lm.compressor, store=chat_model.store, **kwargs)

    def index_documents(self, documents: Sequence[Document]) -> list[str]:
        """Compress `documents` into the store ahead of queries (indexing time); returns their digest keys."""
        return [d.metadata[METADATA_KEY] for d in self._compress(documents)]

    def compress_documents(
        self, documents: Sequence[Document], query: str | None = None, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Documents whose text is replaced by digest markers, in order. `query` is not used: IC-Former
        digests do not depend on the question."""
        return self._compress(documents)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str | None = None, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Like :meth:`compress_documents`; the one batched compression runs in a worker thread."""
        return await asyncio.to_thread(self._compress, documents)

    def _compress(self, documents: Sequence[Document]) -> list[Document]:
        if isinstance(documents, (str, Document)) or not isinstance(documents, Sequence):
            raise TypeError("compress_documents() takes a list of Documents")
        for i, d in enumerate(documents):
            if not isinstance(d, Document):
                raise TypeError(f"document {i} is a {type(d).__name__}, not a langchain Document")
        digests, hits = self.store.compress_cached(self.compressor, [d.page_content for d in documents])
        out = []
        for doc, digest, hit in zip(documents, digests, hits, strict=True):
            key = digest_key(digest)
            metadata = {
                **doc.metadata,
                METADATA_KEY: key,
                METADATA_HIT: hit,
                METADATA_TOKENS: digest.num_tokens,
                METADATA_DIGESTS: len(digest),
            }
            content = append_key_terms(marker_for(key), doc.page_content) if self.key_terms else marker_for(key)
            out.append(Document(page_content=content, metadata=metadata, id=doc.id))
        return out
