"""The LlamaIndex adapters, unchanged, as `QueryPipeline` components, end to end on CPU with the real libraries.

`QueryPipeline` exists only up to llama-index-core 0.12.x (deprecated in 0.12.44, removed in 0.13.0), so this module
skips on the 0.14 the main suite runs on; CI runs it in a second virtual environment with llama-index-core 0.12.52
(scripts/test_llama_index_012.sh), where a skip fails CI. The pipeline is the DAG LlamaIndex documents for RAG:
input -> retriever (FAISS, all-MiniLM-L6-v2 offline) -> ICFormerNodePostprocessor -> the default response synthesizer
with ICFormerLLM (default LLM + shipped compressor), over nodes whose digests were made at indexing time by
ICFormerDigestTransform; and ICFormerLLM as the LLM component of a prompt -> LLM chain.
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("llama_index.core.query_pipeline")
pytest.importorskip("faiss")
pytest.importorskip("llama_index.vector_stores.faiss")
pytest.importorskip("llama_index.embeddings.huggingface")

from llama_index.core import PromptTemplate  # noqa: E402
from llama_index.core.base.llms.types import ChatResponse  # noqa: E402
from llama_index.core.base.response.schema import Response  # noqa: E402
from llama_index.core.query_pipeline import InputComponent, QueryPipeline  # noqa: E402
from llama_index.core.response_synthesizers import get_response_synthesizer  # noqa: E402
from llama_index.postprocessor.icformer import ICFormerNodePostprocessor  # noqa: E402
from llama_index_samples import digests_read  # noqa: E402

from icformer_rag import find_markers, marker_for  # noqa: E402
from icformer_rag.testing import QUESTION  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine_answer(sample_index, llama_llm) -> str:
    """The query engine's answer on the same index: what the pipeline must reproduce."""
    engine = sample_index.as_query_engine(
        llm=llama_llm, node_postprocessors=[ICFormerNodePostprocessor.for_llm(llama_llm)], similarity_top_k=2
    )
    return engine.query(QUESTION).response


def rag_pipeline(index, llm) -> QueryPipeline:
    """input -> retriever -> ICFormerNodePostprocessor -> default (COMPACT) response synthesizer with ICFormerLLM."""
    pipeline = QueryPipeline(verbose=False)
    pipeline.add_modules(
        {
            "input": InputComponent(),
            "retriever": index.as_retriever(similarity_top_k=2),
            "compress": ICFormerNodePostprocessor.for_llm(llm),
            "synthesize": get_response_synthesizer(llm=llm),
        }
    )
    pipeline.add_link("input", "retriever")
    pipeline.add_link("retriever", "compress", dest_key="nodes")
    pipeline.add_link("input", "compress", dest_key="query_str")
    pipeline.add_link("compress", "synthesize", dest_key="nodes")
    pipeline.add_link("input", "synthesize", dest_key="query_str")
    return pipeline


def check_run(response, intermediates, seen, engine_answer) -> list[str]:
    """Digest markers and metadata on the nodes passed on, the LLM read exactly those digests, the engine's answer."""
    assert isinstance(response, Response) and isinstance(response.response, str) and response.response
    retrieved = intermediates["retriever"].outputs["output"]
    passed_on = intermediates["compress"].outputs["nodes"]
    assert [n.node.node_id for n in passed_on] == [n.node.node_id for n in retrieved]
    assert [n.node.get_content() for n in intermediates["synthesize"].inputs["nodes"]] == [
        n.node.get_content() for n in passed_on
    ]
    assert not any(find_markers(n.node.get_content()) for n in retrieved)  # the retriever gives the full text
    keys = [n.node.metadata["icformer_digest_key"] for n in passed_on]
    assert len(keys) == 2 and passed_on[0].node.metadata["file_name"] == "velmora.txt"
    assert [n.node.get_content() for n in passed_on] == [marker_for(k) for k in keys]  # text is the marker only
    assert all(
        n.node.metadata["icformer_cache_hit"] and n.node.metadata["icformer_digests"] > 0 for n in passed_on
    )  # digests from indexing time
    assert [n.node.metadata["icformer_digest_key"] for n in response.source_nodes] == keys
    assert seen and all(s == keys for s in seen)  # every LLM call read exactly the retrieved nodes' digests
    assert response.response == engine_answer
    return keys


def test_adapters_are_query_components(sample_index, llama_llm):
    """Each adapter turns itself into a QueryComponent with LlamaIndex's own input and output keys."""
    post = ICFormerNodePostprocessor.for_llm(llama_llm).as_query_component()
    assert post.input_keys.required_keys == {"nodes"} and post.output_keys.required_keys == {"nodes"}
    assert "query_str" in post.input_keys.optional_keys
    assert llama_llm.as_query_component().output_keys.required_keys == {"output"}


def test_query_pipeline_run_reads_indexing_time_digests(sample_index, llama_llm, engine_answer):
    pipeline = rag_pipeline(sample_index, llama_llm)
    with digests_read() as seen:
        response, intermediates = pipeline.run_with_intermediates(input=QUESTION)
    keys = check_run(response, intermediates, seen, engine_answer)
    with digests_read() as seen:
        assert pipeline.run(input=QUESTION).response == engine_answer
    assert seen and all(s == keys for s in seen)


def test_query_pipeline_arun_reads_indexing_time_digests(sample_index, llama_llm, engine_answer):
    pipeline = rag_pipeline(sample_index, llama_llm)
    with digests_read() as seen:
        response, intermediates = asyncio.run(pipeline.arun_with_intermediates(input=QUESTION))
    keys = check_run(response, intermediates, seen, engine_answer)
    with digests_read() as seen:
        assert asyncio.run(pipeline.arun(input=QUESTION)).response == engine_answer
    assert seen and all(s == keys for s in seen)


def test_prompt_to_llm_chain_reads_the_marker_as_a_digest(sample_index, llama_llm):
    """ICFormerLLM as the LLM component of a chain: a marker in the formatted prompt is read as its digest."""
    node = (
        ICFormerNodePostprocessor.for_llm(llama_llm)
        .postprocess_nodes(sample_index.as_retriever(similarity_top_k=1).retrieve(QUESTION), query_str=QUESTION)[0]
        .node
    )
    key = node.metadata["icformer_digest_key"]
    chain = QueryPipeline(chain=[PromptTemplate("Context:\n{context}\nQuestion: {question}"), llama_llm])
    with digests_read() as seen:
        out = chain.run(context=node.get_content(), question=QUESTION)
    assert isinstance(out, ChatResponse) and out.message.content
    assert seen == [[key]]
