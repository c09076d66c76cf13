"""Issue 16 items 7-10 for LlamaIndex, on the tiny random Llama: markers outside the project's own models,
IngestionPipeline workers, token accounting, a context budget. Each test's docstring holds the repro that failed
before the fix."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core import Document as LIDocument
from llama_index.core import MockEmbedding, VectorStoreIndex
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.llms import MockLLM
from llama_index.core.postprocessor import MetadataReplacementPostProcessor
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode
from llama_index.llms.icformer import ICFormerLLM
from llama_index.postprocessor.icformer import ICFormerDigestTransform, ICFormerNodePostprocessor

from icformer_rag import DigestStore, find_markers, key_for

TEXT_A = "The town of Velmora was founded in 1723 by Ada Krenn, a glassmaker."
TEXT_B = "Glass is made from sand, soda and lime. " * 6
TEXT_C = "Velmora's harbour froze in the winter of 1801, and the glassworks closed for a year."


@pytest.fixture()
def llm(soft_lm) -> ICFormerLLM:
    return ICFormerLLM(soft_lm, DigestStore(), max_new_tokens=4)


@pytest.fixture()
def post(llm) -> ICFormerNodePostprocessor:
    return ICFormerNodePostprocessor.for_llm(llm)


def scored(*texts: str, scores: list[float] | None = None) -> list[NodeWithScore]:
    scores = scores or [1.0 - i / 10 for i in range(len(texts))]
    return [
        NodeWithScore(node=TextNode(text=t, id_=f"node-{i}", metadata={"source": f"doc{i}"}), score=s)
        for i, (t, s) in enumerate(zip(texts, scores, strict=True))
    ]


def positions(store: DigestStore, text: str, compressor) -> int:
    """What a marker of `text`'s digest takes in the prompt: the vectors, BEGIN and END."""
    return len(store.get(key_for(text, compressor.fingerprint))) + 2


def index_of(texts: list[str]) -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(
        [LIDocument(text=t, id_=f"doc-{i}") for i, t in enumerate(texts)], embed_model=MockEmbedding(embed_dim=8)
    )


def test_nodes_keep_their_text_and_source_nodes_can_show_it(llm, post):
    """Repro: `index.as_query_engine(llm=ICFormerLLM, node_postprocessors=[post]).query(q).source_nodes[0].text`
    -> '⟦icf:…⟧' with the original text nowhere."""
    engine = index_of([TEXT_A, TEXT_C]).as_query_engine(llm=llm, node_postprocessors=[post], similarity_top_k=2)
    response = engine.query("Who founded Velmora?")
    sources = response.source_nodes
    assert len(sources) == 2 and all(find_markers(n.node.get_content()) for n in sources)
    assert sorted(n.node.metadata["icformer_text"] for n in sources) == sorted([TEXT_A, TEXT_C])
    for n in sources:  # the copy of the text is bookkeeping: neither the LLM nor the embedder reads it
        assert "icformer_text" in n.node.excluded_llm_metadata_keys
        assert TEXT_A not in n.node.get_content(metadata_mode=MetadataMode.LLM)
    from llama_index.postprocessor.icformer import restore_text

    restored = restore_text(sources)
    assert sorted(n.node.get_content() for n in restored) == sorted([TEXT_A, TEXT_C])
    assert [n.score for n in restored] == [n.score for n in sources]


def test_an_engine_whose_llm_is_not_icformer_is_an_error(post):
    """Repro: `index.as_query_engine(llm=MockLLM(), node_postprocessors=[post]).query(q)` answered over the
    marker text ('⟦icf:…⟧ ...'), with no error."""
    engine = index_of([TEXT_A]).as_query_engine(llm=MockLLM(), node_postprocessors=[post])
    with pytest.raises(ValueError, match=r"answers with MockLLM.*ICFormerNodePostprocessor.for_llm"):
        engine.query("Who founded Velmora?")
    with pytest.raises(ValueError, match="MockLLM"):
        asyncio.run(engine.aquery("Who founded Velmora?"))


def test_a_text_reading_postprocessor_after_it_is_an_error(llm, post, soft_lm):
    """Repro: `node_postprocessors=[post, MetadataReplacementPostProcessor("window")]` replaced the markers (or
    a reranker read them as text), silently; a postprocessor over another store failed later, at the LLM."""
    after = MetadataReplacementPostProcessor(target_metadata_key="window")
    engine = index_of([TEXT_A]).as_query_engine(llm=llm, node_postprocessors=[post, after])
    with pytest.raises(ValueError, match="MetadataReplacementPostProcessor after it: move it before"):
        engine.query("Who founded Velmora?")
    other = ICFormerNodePostprocessor(soft_lm.compressor, DigestStore())
    engine = index_of([TEXT_A]).as_query_engine(llm=llm, node_postprocessors=[other])
    with pytest.raises(ValueError, match="another digest store"):
        engine.query("Who founded Velmora?")
    with pytest.raises(TypeError, match="takes an ICFormerLLM, got MockLLM"):
        ICFormerNodePostprocessor.for_llm(MockLLM())
    once = post.postprocess_nodes(scored(TEXT_A))
    with pytest.raises(ValueError, match="already compressed"):
        post.postprocess_nodes(once)


# ------------------------------------------------------------------------ item 8: IngestionPipeline workers
def test_ingestion_pipeline_with_two_workers(llm, compressor, tmp_path):
    """Repro: `IngestionPipeline(transformations=[ICFormerDigestTransform.for_llm(llm)]).run(documents=docs,
    num_workers=2)` -> AttributeError: '_compressor' in the workers (private attributes dropped by pickling)."""
    # Nodes, not a SentenceSplitter: offline, a splitter unpickled in a worker fails to fetch tiktoken's encoding,
    # and multiprocessing's pool then hangs (a LlamaIndex/offline matter, not the transform's).
    store = DigestStore(tmp_path / "digests")
    pipeline = IngestionPipeline(transformations=[ICFormerDigestTransform(compressor, store)], disable_cache=True)
    texts = [TEXT_A, TEXT_B, TEXT_C, "A fourth document about sand."]
    nodes = pipeline.run(nodes=[TextNode(text=t, id_=f"n{i}") for i, t in enumerate(texts)], num_workers=2)
    assert [n.metadata["icformer_digest_key"] for n in nodes] == [key_for(t, compressor.fingerprint) for t in texts]
    for t in texts:  # written by the workers into the folder; the main process's store reads them
        assert store.get(key_for(t, compressor.fingerprint)) is not None
    memory = IngestionPipeline(transformations=[ICFormerDigestTransform(compressor, DigestStore())])
    with pytest.raises(TypeError, match="memory-only DigestStore.*num_workers=1"):
        memory.run(nodes=[TextNode(text=TEXT_A), TextNode(text=TEXT_B)], num_workers=2)


def test_llama_index_prompt_packing_counts_digest_positions(llm, post, compressor):
    """Repro: the query engine's PromptHelper counted '⟦icf:…⟧' with tiktoken (marker characters), not the
    digest's positions, so compact packing could overflow the LLM or waste its window."""
    marker = post.postprocess_nodes(scored(TEXT_B))[0].node.get_content()
    assert llm.count_tokens(marker) == positions(llm.store, TEXT_B, compressor) == len(llm.tokenizer(marker))
    engine = index_of([TEXT_B]).as_query_engine(llm=llm, node_postprocessors=[post])
    engine.query("What is glass made from?")
    helper = engine._response_synthesizer._prompt_helper
    assert helper._token_counter.get_string_tokens(marker) == positions(llm.store, TEXT_B, compressor)


def test_postprocessor_budget_drops_the_lowest_scored(llm, compressor):
    """Repro: `ICFormerNodePostprocessor` had no cap: too many retrieved nodes failed in the LLM with a
    ValueError after retrieval."""
    nodes = scored(TEXT_A, TEXT_B, TEXT_C, scores=[0.5, 0.2, 0.9])  # TEXT_B ranks last
    full = ICFormerNodePostprocessor.for_llm(llm).postprocess_nodes(nodes)
    need = {n.node.metadata["icformer_text"]: n.node.metadata["icformer_positions"] for n in full}
    capped = ICFormerNodePostprocessor.for_llm(llm, max_context_positions=need[TEXT_A] + need[TEXT_C] + 1)
    with pytest.warns(UserWarning, match="dropped the 1 lowest-ranked, kept 2"):
        out = capped.postprocess_nodes(nodes)
    assert [n.node.metadata["icformer_text"] for n in out] == [TEXT_A, TEXT_C]  # order kept, TEXT_B gone
    assert [n.score for n in out] == [0.5, 0.9]
