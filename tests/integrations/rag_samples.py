"""The sample corpus shipped with icformer-rag, as the RAG tests index it, and helpers the adapter tests share (a
module, not conftest, so that test modules can import it whatever conftest pytest imported last)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import icformer_rag

SAMPLES = Path(icformer_rag.__file__).parent / "samples"
T = TypeVar("T")
QUESTION = "Who founded the town of Velmora, and in what year?"  # answered by velmora.txt


def sample_paragraphs() -> list[tuple[str, str]]:
    """(file name, paragraph) for every paragraph of the shipped sample documents."""
    out = []
    for path in sorted(SAMPLES.glob("*.txt")):
        for para in path.read_text().split("\n\n"):
            if para.strip():
                out.append((path.name, para.strip()))
    return out


def build_llama_index(llm, minilm_path: str):
    """The sample documents as a LlamaIndex VectorStoreIndex over FAISS (all-MiniLM-L6-v2 offline), chunked by
    SentenceSplitter, with each node's digests made at indexing time by ICFormerDigestTransform for `llm`."""
    import faiss
    from llama_index.core import SimpleDirectoryReader, StorageContext, VectorStoreIndex
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.faiss import FaissVectorStore
    from llama_index_icformer import ICFormerDigestTransform

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


def import_error_without(hidden: str, package: str) -> str:
    """What `import <package>` prints as its ImportError in a fresh interpreter run from integrations/ (the adapters
    as a checkout has them) in which module `hidden` cannot be imported; empty if the import succeeds."""
    code = f"import sys; sys.modules[{hidden!r}] = None\ntry:\n import {package}\nexcept ImportError as e:\n print(e)"
    where = Path(__file__).parents[2] / "integrations"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=where, check=True).stdout


def run_in_threads(work: Callable[[int], T], n: int = 8) -> dict[int, T]:
    """`work(i)` for i in range(n), each in its own thread, all started before any is joined: the results by i.
    Raises the first exception a thread hit, once all are joined."""
    results: dict[int, T] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = work(i)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
