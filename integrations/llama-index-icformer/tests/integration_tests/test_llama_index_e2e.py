"""End to end on CPU with the real libraries: sample documents -> IngestionPipeline (SentenceSplitter,
ICFormerDigestTransform, all-MiniLM-L6-v2 offline) -> FAISS -> VectorStoreIndex.as_query_engine with the default
response synthesizer, ICFormerNodePostprocessor and ICFormerLLM (default LLM + shipped compressor); and the same
chain as a llama_index.core.workflow.Workflow, LlamaIndex's replacement for QueryPipeline (removed from
llama-index-core in 0.13.0)."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("faiss")
pytest.importorskip("llama_index.vector_stores.faiss")
pytest.importorskip("llama_index.embeddings.huggingface")

from llama_index.core.base.response.schema import Response  # noqa: E402
from llama_index.core.response_synthesizers import get_response_synthesizer  # noqa: E402
from llama_index.core.schema import NodeWithScore  # noqa: E402
from llama_index.core.workflow import Event, StartEvent, StopEvent, Workflow, step  # noqa: E402
from llama_index.llms.icformer import ICFormerLLM  # noqa: E402
from llama_index.postprocessor.icformer import ICFormerNodePostprocessor  # noqa: E402
from llama_index_samples import digests_read  # noqa: E402

from icformer_rag import find_markers  # noqa: E402
from icformer_rag.testing import QUESTION  # noqa: E402

pytestmark = pytest.mark.slow


def test_from_default_loads_the_default_llm_and_checkpoint():
    llm = ICFormerLLM.from_default(device="cpu", dtype="float32", max_new_tokens=8)
    assert llm.metadata.model_name == "SmolLM2-135M-Instruct" and llm.lm.compressor is not None
    assert isinstance(llm.complete("Say hello.").text, str)


def test_query_engine_over_faiss_reads_pre_indexed_digests(sample_index, llama_llm):
    engine = sample_index.as_query_engine(
        llm=llama_llm, node_postprocessors=[ICFormerNodePostprocessor.for_llm(llama_llm)], similarity_top_k=2
    )
    response = engine.query(QUESTION)
    assert isinstance(response.response, str) and response.response
    sources = response.source_nodes
    assert sources[0].node.metadata["file_name"] == "velmora.txt"
    assert all(n.node.metadata["icformer_cache_hit"] for n in sources)  # digests from indexing time
    assert asyncio.run(engine.aquery(QUESTION)).response == response.response


def test_full_text_baseline_through_the_same_llm(sample_index, llama_llm):
    """No postprocessor: the LLM is a plain local chat LLM and reads the nodes' text."""
    response = sample_index.as_query_engine(llm=llama_llm, similarity_top_k=2).query(QUESTION)
    assert "Krenn" in response.response and "1723" in response.response


# ------------------------------------------------------------------------------- Workflow (QueryPipeline's successor)
class Retrieved(Event):
    query: str
    nodes: list[NodeWithScore]


class Compressed(Event):
    query: str
    nodes: list[NodeWithScore]


class DigestRAG(Workflow):
    """Retrieve -> ICFormerNodePostprocessor -> response synthesizer: plain LlamaIndex glue, adapters unchanged."""

    def __init__(self, retriever, postprocessor, synthesizer, **kwargs) -> None:
        super().__init__(**kwargs)
        self.retriever, self.postprocessor, self.synthesizer = retriever, postprocessor, synthesizer

    @step
    async def retrieve(self, ev: StartEvent) -> Retrieved:
        return Retrieved(query=ev.query, nodes=await self.retriever.aretrieve(ev.query))

    @step
    async def compress(self, ev: Retrieved) -> Compressed:
        return Compressed(
            query=ev.query, nodes=await self.postprocessor.apostprocess_nodes(ev.nodes, query_str=ev.query)
        )

    @step
    async def synthesize(self, ev: Compressed) -> StopEvent:
        return StopEvent(result=await self.synthesizer.asynthesize(ev.query, nodes=ev.nodes))


def test_workflow_retrieve_compress_synthesize_reads_digests(sample_index, llama_llm):
    """A Workflow RAG chain (default COMPACT synthesizer) gives the query engine's answer, from digests only."""
    workflow = DigestRAG(
        sample_index.as_retriever(similarity_top_k=2),
        ICFormerNodePostprocessor.for_llm(llama_llm),
        get_response_synthesizer(llm=llama_llm),
        timeout=600,
    )

    async def run() -> Response:  # Workflow.run schedules its steps on the running loop
        return await workflow.run(query=QUESTION)

    with digests_read() as seen:  # the digests each LLM call read
        response = asyncio.run(run())
    assert isinstance(response, Response) and isinstance(response.response, str) and response.response
    sources = response.source_nodes
    keys = [n.node.metadata["icformer_digest_key"] for n in sources]
    assert len(keys) == 2 and sources[0].node.metadata["file_name"] == "velmora.txt"
    assert all(n.node.metadata["icformer_cache_hit"] and n.node.metadata["icformer_digests"] > 0 for n in sources)
    assert [find_markers(n.node.get_content()) for n in sources] == [[k] for k in keys]  # text is the marker only
    assert seen and all(s == keys for s in seen)  # every LLM call read exactly the retrieved nodes' digests
    engine = sample_index.as_query_engine(
        llm=llama_llm, node_postprocessors=[ICFormerNodePostprocessor.for_llm(llama_llm)], similarity_top_k=2
    )
    assert response.response == engine.query(QUESTION).response
