"""The sample corpus shipped with icformer-rag as the LlamaIndex tests index it, and LlamaIndex's record of the
digests each ICFormerLLM call read (a module, not conftest, so that test modules can import it whatever conftest
pytest imported last)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from icformer_rag.testing import SAMPLES


def build_llama_index(llm, minilm_path: str):
    """The sample documents as a LlamaIndex VectorStoreIndex over FAISS (all-MiniLM-L6-v2 offline), chunked by
    SentenceSplitter, with each node's digests made at indexing time by ICFormerDigestTransform for `llm`."""
    import faiss
    from llama_index.core import SimpleDirectoryReader, StorageContext, VectorStoreIndex
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.postprocessor.icformer import ICFormerDigestTransform
    from llama_index.vector_stores.faiss import FaissVectorStore

    embed_model = HuggingFaceEmbedding(model_name=minilm_path, device="cpu")
    documents = SimpleDirectoryReader(str(SAMPLES), required_exts=[".txt"]).load_data()
    pipeline = IngestionPipeline(
        transformations=[
            SentenceSplitter(chunk_size=128, chunk_overlap=0),
            ICFormerDigestTransform.for_llm(llm),
            embed_model,
        ]
    )
    nodes = pipeline.run(documents=documents)
    store = FaissVectorStore(faiss_index=faiss.IndexFlatL2(384))
    return VectorStoreIndex(
        nodes, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed_model
    )


@contextlib.contextmanager
def digests_read() -> Iterator[list[list[str] | None]]:
    """The digest keys each ICFormerLLM chat call read, as LlamaIndex's own instrumentation reports them."""
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events.llm import LLMChatEndEvent

    seen: list[list[str] | None] = []

    class Collect(BaseEventHandler):
        def handle(self, event, **kwargs) -> None:
            if isinstance(event, LLMChatEndEvent) and event.response is not None:
                seen.append(event.response.additional_kwargs.get("icformer_digest_keys"))

    dispatcher = get_dispatcher()
    handler = Collect()
    dispatcher.add_event_handler(handler)
    try:
        yield seen
    finally:
        dispatcher.event_handlers.remove(handler)
