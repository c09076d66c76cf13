"""End to end on CPU with the real libraries: sample documents -> IngestionPipeline (SentenceSplitter,
ICFormerDigestTransform, all-MiniLM-L6-v2 offline) -> FAISS -> VectorStoreIndex.as_query_engine with the default
response synthesizer, ICFormerNodePostprocessor and ICFormerLLM (default LLM + shipped compressor)."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("llama_index.core")
faiss = pytest.importorskip("faiss")
li_faiss = pytest.importorskip("llama_index.vector_stores.faiss")
li_hf = pytest.importorskip("llama_index.embeddings.huggingface")

from llama_index.core import SimpleDirectoryReader, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.ingestion import IngestionPipeline  # noqa: E402
from llama_index.core.node_parser import SentenceSplitter  # noqa: E402
from llama_index_icformer import ICFormerDigestTransform, ICFormerLLM, ICFormerNodePostprocessor  # noqa: E402
from rag_samples import SAMPLES  # noqa: E402

from icformer_rag.store import DigestStore  # noqa: E402

pytestmark = pytest.mark.slow

QUESTION = "Who founded the town of Velmora, and in what year?"


@pytest.fixture(scope="module")
def llm(default_lm, tmp_path_factory):
    return ICFormerLLM(default_lm, DigestStore(tmp_path_factory.mktemp("digests")), max_new_tokens=48)


@pytest.fixture(scope="module")
def index(llm, minilm_path):
    embed_model = li_hf.HuggingFaceEmbedding(model_name=minilm_path, device="cpu")
    documents = SimpleDirectoryReader(str(SAMPLES), required_exts=[".txt"]).load_data()
    pipeline = IngestionPipeline(transformations=[SentenceSplitter(chunk_size=128, chunk_overlap=0),
                                                  ICFormerDigestTransform.for_llm(llm), embed_model])
    nodes = pipeline.run(documents=documents)
    store = li_faiss.FaissVectorStore(faiss_index=faiss.IndexFlatL2(384))
    return VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store),
                            embed_model=embed_model)


def test_from_default_loads_the_default_llm_and_checkpoint():
    llm = ICFormerLLM.from_default(device="cpu", dtype="float32", max_new_tokens=8)
    assert llm.metadata.model_name == "SmolLM2-135M-Instruct" and llm.lm.compressor is not None
    assert isinstance(llm.complete("Say hello.").text, str)


def test_query_engine_over_faiss_reads_pre_indexed_digests(index, llm):
    engine = index.as_query_engine(llm=llm, node_postprocessors=[ICFormerNodePostprocessor.for_llm(llm)],
                                   similarity_top_k=2)
    response = engine.query(QUESTION)
    assert isinstance(response.response, str) and response.response
    sources = response.source_nodes
    assert sources[0].node.metadata["file_name"] == "velmora.txt"
    assert all(n.node.metadata["icformer_cache_hit"] for n in sources)  # digests from indexing time
    assert asyncio.run(engine.aquery(QUESTION)).response == response.response


def test_full_text_baseline_through_the_same_llm(index, llm):
    """No postprocessor: the LLM is a plain local chat LLM and reads the nodes' text."""
    response = index.as_query_engine(llm=llm, similarity_top_k=2).query(QUESTION)
    assert "Krenn" in response.response and "1723" in response.response
