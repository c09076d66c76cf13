"""ICFormerCompressor: retrieved documents -> digest markers, the digests in a DigestStore."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field

from icformer_rag import (
    METADATA_KEY,
    METADATA_TEXT,
    BaseDigestStore,
    ContextCompressor,
    DigestStore,
    compress_texts,
    find_markers,
    fit_positions,
    require_last_step,
)

# Steps that may follow the compressor in a DocumentCompressorPipeline: they move documents, never read their text.
_ORDER_ONLY_STEPS = frozenset({"LongContextReorder"})
_LAST_STEP = (
    "ICFormerCompressor must be the last step before ChatICFormer: anything after it (an embeddings filter, a "
    "reranker, an extractor, another chat model) reads the markers ⟦icf:...⟧ as text"
)


def restore_text(documents: Sequence[Document]) -> list[Document]:
    """Copies of compressed documents with their original text back in `page_content` (from metadata
    `icformer_text`), e.g. to show as citations or to hand to a model that is not :class:`ChatICFormer`; other
    documents are returned as they are."""
    return [
        Document(page_content=d.metadata[METADATA_TEXT], metadata=dict(d.metadata), id=d.id)
        if isinstance(d.metadata.get(METADATA_TEXT), str)
        else d
        for d in documents
    ]


class ICFormerCompressor(BaseDocumentCompressor):
    """Compresses retrieved documents into IC-Former digests that :class:`ChatICFormer` reads.

    Every document of a call is compressed in one batch (documents already in the store are not compressed
    again). Each returned `Document` keeps the original's `id` and metadata; its `page_content` becomes a
    marker ``⟦icf:<key>.<tag>⟧`` that the chat model, sharing the same `store`, replaces with the digest vectors
    (in this process only: the tag is an HMAC under a per-process secret, so text cannot forge a marker), and
    its metadata gains `icformer_digest_key`, `icformer_cache_hit`, `icformer_tokens` (source tokens),
    `icformer_digests` (digest vectors), `icformer_positions` (prompt positions the chat model reads for its digest:
    the vectors, BEGIN and END) and `icformer_text` (the original text, for citations
    and display; :func:`restore_text` puts it back into `page_content`).
    Compression does not depend on the query, so a digest is made once per text and compressor, and can be made
    ahead of time with :meth:`index_documents`. With
    `key_terms=True` the marker is followed by a plain line of the document's names and numbers, which the LLM
    reads as text beside the digests (about 50 tokens a document; better answers on names, dates and counts).

    The compressor is the **last step before** :class:`ChatICFormer` (sharing its store): only that chat model
    reads markers as digests. Any other model (``ChatHuggingFace``, ``ChatOpenAI``...) or any text-reading step after
    it (``EmbeddingsFilter``, rerankers, extractors) would read the markers as text, so put those steps before it.
    Inside a ``DocumentCompressorPipeline`` a step after it is an error naming the step (``LongContextReorder``,
    which only reorders, is allowed); a document that is already a marker is an error too (compressed twice).

    `max_context_positions` caps the prompt positions all documents of a call may use together (like LLMLingua's
    `target_token`): documents are ranked in the order given (a retriever's, best first) and the lowest-ranked
    are dropped, with a warning naming how many, until the rest fit; without it, too much context is only
    found out by the chat model (a ValueError on the LLM's positions).

    Setup:
        ```bash
        pip install langchain-icformer
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
    store: BaseDigestStore = Field(default_factory=DigestStore)
    """Where digests are kept and looked up; share it with the chat model. A store with a folder persists."""
    key_terms: bool = False
    """Append "\\n" + the document's names-and-numbers line (`icformer_rag.key_terms`) after its marker."""
    max_context_positions: int | None = Field(default=None, ge=1)
    """Most prompt positions the documents of one call may use together (digest vectors + BEGIN/END each, plus
    their key-terms lines); the lowest-ranked (last) documents are dropped first, with a warning. None: no cap."""

    @classmethod
    def for_chat_model(cls, chat_model: Any, **kwargs: Any) -> ICFormerCompressor:
        """A compressor writing into `chat_model`'s digest store with its compressor."""
        from .chat_models import ChatICFormer

        if not isinstance(chat_model, ChatICFormer):
            raise TypeError(
                f"for_chat_model() takes a ChatICFormer, got {type(chat_model).__name__}: only ChatICFormer reads "
                "digest markers; any other chat model would read them as text (give it the documents uncompressed)"
            )
        if chat_model.lm.compressor is None:
            raise ValueError("the chat model's SoftPromptLM has no compressor")
        return cls(compressor=chat_model.lm.compressor, store=chat_model.store, **kwargs)

    def index_documents(self, documents: Sequence[Document]) -> list[str]:
        """Compress `documents` into the store ahead of queries (indexing time); returns their digest keys."""
        return [d.metadata[METADATA_KEY] for d in self._compress(documents)[0]]

    def compress_documents(
        self, documents: Sequence[Document], query: str | None = None, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Documents whose text is replaced by digest markers, in order (less the lowest-ranked ones over
        `max_context_positions`). `query` is not used: IC-Former digests do not depend on the question."""
        _check_last_step(self)
        return self._limit(*self._compress(documents))

    async def acompress_documents(
        self, documents: Sequence[Document], query: str | None = None, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Like :meth:`compress_documents`; the one batched compression runs in a worker thread."""
        _check_last_step(self)
        return self._limit(*await asyncio.to_thread(self._compress, documents))

    def _compress(self, documents: Sequence[Document]) -> tuple[list[Document], list[int]]:
        """The compressed documents, in order, and the prompt positions each uses."""
        if isinstance(documents, (str, Document)) or not isinstance(documents, Sequence):
            raise TypeError("compress_documents() takes a list of Documents")
        for i, d in enumerate(documents):
            if not isinstance(d, Document):
                raise TypeError(f"document {i} is a {type(d).__name__}, not a langchain Document")
            if find_markers(d.page_content):
                raise ValueError(
                    f"document {i} is already compressed (its text holds a digest marker): {_LAST_STEP}; "
                    "compress each document once"
                )
        compressed = compress_texts(self.compressor, self.store, [d.page_content for d in documents], self.key_terms)
        out = [
            Document(page_content=c.content, metadata={**doc.metadata, **c.metadata}, id=doc.id)
            for doc, c in zip(documents, compressed, strict=True)
        ]
        return out, [c.positions for c in compressed]

    def _limit(self, documents: list[Document], need: list[int]) -> list[Document]:
        """`documents` (best first) less the lowest-ranked ones, until they fit `max_context_positions`; a
        warning says what was dropped. The newline that joins two documents is counted too."""
        cap = self.max_context_positions
        if cap is None or not documents:
            return documents
        kept, used = fit_positions(need, cap)
        if len(kept) < len(documents):
            warnings.warn(
                f"ICFormerCompressor: the {len(documents)} documents need {sum(need)} prompt positions, over "
                f"max_context_positions={cap}; dropped the {len(documents) - len(kept)} lowest-ranked, kept "
                f"{len(kept)} ({used} positions)",
                UserWarning,
                stacklevel=3,
            )
        return [documents[i] for i in kept]


def _check_last_step(compressor: ICFormerCompressor) -> None:
    """ValueError if `compressor` runs inside a document-compressor pipeline (LangChain's
    ``DocumentCompressorPipeline``, or anything calling it from a `transformers` list) with a text-reading step
    after it. Found by looking a few frames up for the calling pipeline, the only place the order is known."""
    require_last_step(compressor, "transformers", rule=_LAST_STEP, order_only=_ORDER_ONLY_STEPS, max_frames=8, skip=2)
