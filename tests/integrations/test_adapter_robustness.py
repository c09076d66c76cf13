"""Issue 16 items 7-10 on the tiny random Llama: markers outside the project's own models, IngestionPipeline
workers, token accounting, a context budget. Each test's docstring holds the repro that failed before the fix."""

from __future__ import annotations

import asyncio
import warnings

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from langchain_core.language_models import FakeListChatModel  # noqa: E402
from langchain_icformer import ChatICFormer, ICFormerCompressor  # noqa: E402
from llama_index.core import Document as LIDocument  # noqa: E402
from llama_index.core import MockEmbedding, VectorStoreIndex  # noqa: E402
from llama_index.core.ingestion import IngestionPipeline  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.postprocessor import MetadataReplacementPostProcessor  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode  # noqa: E402
from llama_index_icformer import ICFormerDigestTransform, ICFormerLLM, ICFormerNodePostprocessor  # noqa: E402

from icformer_rag.store import DigestStore, find_markers, key_for, marker_for  # noqa: E402

TEXT_A = "The town of Velmora was founded in 1723 by Ada Krenn, a glassmaker."
TEXT_B = "Glass is made from sand, soda and lime. " * 6
TEXT_C = "Velmora's harbour froze in the winter of 1801, and the glassworks closed for a year."


@pytest.fixture()
def chat(soft_lm) -> ChatICFormer:
    return ChatICFormer(lm=soft_lm, store=DigestStore(), max_tokens=4)


@pytest.fixture()
def lc_compressor(chat) -> ICFormerCompressor:
    return ICFormerCompressor.for_chat_model(chat)


@pytest.fixture()
def llm(soft_lm) -> ICFormerLLM:
    return ICFormerLLM(soft_lm, DigestStore(), max_new_tokens=4)


@pytest.fixture()
def post(llm) -> ICFormerNodePostprocessor:
    return ICFormerNodePostprocessor.for_llm(llm)


def docs(*texts: str) -> list[Document]:
    return [Document(page_content=t, metadata={"source": f"doc{i}"}, id=f"id-{i}") for i, t in enumerate(texts)]


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


# ------------------------------------------------------------------- item 7: markers outside our models
def test_compressed_documents_keep_their_text_for_other_readers(lc_compressor):
    """Repro: `ICFormerCompressor(...).compress_documents(docs)` -> page_content '⟦icf:…⟧' and the original text
    was gone, so a citation, a display or a `ChatHuggingFace` chain had only the marker to show or read."""
    out = lc_compressor.compress_documents(docs(TEXT_A, TEXT_B), "q")
    assert [d.metadata["icformer_text"] for d in out] == [TEXT_A, TEXT_B]
    assert all(find_markers(d.page_content) for d in out)  # ChatICFormer still gets markers
    from langchain_icformer import restore_text

    restored = restore_text(out)
    assert [d.page_content for d in restored] == [TEXT_A, TEXT_B] and [d.id for d in restored] == ["id-0", "id-1"]
    assert out[0].page_content != TEXT_A  # restore_text copies, the compressed documents are unchanged


def test_embeddings_filter_after_the_compressor_is_an_error_naming_the_fix(lc_compressor):
    """Repro: `DocumentCompressorPipeline(transformers=[ICFormerCompressor, EmbeddingsFilter(...)])
    .compress_documents(docs, q)` returned [] (the filter embedded the markers), with no error."""
    compressors = pytest.importorskip("langchain_classic.retrievers.document_compressors")
    pytest.importorskip("numpy")
    embeddings = DeterministicFakeEmbedding(size=16)
    emb_filter = compressors.EmbeddingsFilter(embeddings=embeddings, similarity_threshold=-1.0)
    wrong = compressors.DocumentCompressorPipeline(transformers=[lc_compressor, emb_filter])
    with pytest.raises(ValueError, match=r"last step before ChatICFormer.*EmbeddingsFilter.*move it before"):
        wrong.compress_documents(docs(TEXT_A, TEXT_B), "Who founded Velmora?")
    with pytest.raises(ValueError, match="EmbeddingsFilter"):
        asyncio.run(wrong.acompress_documents(docs(TEXT_A, TEXT_B), "Who founded Velmora?"))
    right = compressors.DocumentCompressorPipeline(transformers=[emb_filter, lc_compressor])
    out = right.compress_documents(docs(TEXT_A, TEXT_B), "Who founded Velmora?")
    assert len(out) == 2 and all(find_markers(d.page_content) for d in out)


def test_other_chat_models_and_double_compression_are_refused(lc_compressor):
    """Repro: `ICFormerCompressor.for_chat_model(ChatHuggingFace(...))` -> AttributeError 'lm'; compressing the
    compressed documents again made digests of marker text silently."""
    with pytest.raises(TypeError, match="takes a ChatICFormer, got FakeListChatModel.*read them as text"):
        ICFormerCompressor.for_chat_model(FakeListChatModel(responses=["x"]))
    once = lc_compressor.compress_documents(docs(TEXT_A), "q")
    with pytest.raises(ValueError, match="already compressed.*last step before ChatICFormer"):
        lc_compressor.compress_documents(once, "q")


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
    from llama_index_icformer import restore_text

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


# ------------------------------------------------------------------------------ item 9: token accounting
def test_chat_model_counts_what_the_llm_reads(chat, lc_compressor, compressor, soft_lm):
    """Repro: `ChatICFormer.get_num_tokens(text)` / `get_token_ids` used LangChain's GPT-2 fallback (0 or a
    download offline), and a marker counted as its characters, not its digest's positions."""
    marker = lc_compressor.compress_documents(docs(TEXT_A), "q")[0].page_content
    want = len(soft_lm.tokenizer("Context: ", add_special_tokens=False)["input_ids"])
    want += positions(chat.store, TEXT_A, compressor)
    assert chat.get_num_tokens("Context: " + marker) == want == len(chat.get_token_ids("Context: " + marker))
    assert chat.get_num_tokens("Hello world") == len(soft_lm.tokenizer("Hello world", add_special_tokens=False)[0])
    messages = [("human", f"Context:\n{marker}\n\nQuestion: Who founded Velmora?")]
    from langchain_core.messages import HumanMessage

    counted = chat.get_num_tokens_from_messages([HumanMessage(messages[0][1])])
    assert counted == chat.invoke(messages).usage_metadata["input_tokens"]
    with pytest.raises(ValueError, match="no digest for marker"):
        chat.get_num_tokens(marker_for("0" * 24))


def test_llama_index_prompt_packing_counts_digest_positions(llm, post, compressor):
    """Repro: the query engine's PromptHelper counted '⟦icf:…⟧' with tiktoken (marker characters), not the
    digest's positions, so compact packing could overflow the LLM or waste its window."""
    marker = post.postprocess_nodes(scored(TEXT_B))[0].node.get_content()
    assert llm.count_tokens(marker) == positions(llm.store, TEXT_B, compressor) == len(llm.tokenizer(marker))
    engine = index_of([TEXT_B]).as_query_engine(llm=llm, node_postprocessors=[post])
    engine.query("What is glass made from?")
    helper = engine._response_synthesizer._prompt_helper
    assert helper._token_counter.get_string_tokens(marker) == positions(llm.store, TEXT_B, compressor)


# -------------------------------------------------------------------------------- item 10: a context budget
def test_compressor_budget_drops_the_lowest_ranked(chat, compressor):
    """Repro: with no cap, five long retrieved documents went to the chat model, which raised ValueError
    ('prompt of N positions ... exceeds the LLM's positions') after retrieval and compression."""
    full = ICFormerCompressor.for_chat_model(chat).compress_documents(docs(TEXT_A, TEXT_B, TEXT_C), "q")
    need = [d.metadata["icformer_positions"] for d in full]
    assert need == [positions(chat.store, t, compressor) for t in (TEXT_A, TEXT_B, TEXT_C)]
    capped = ICFormerCompressor.for_chat_model(chat, max_context_positions=need[0] + need[1] + 1)
    with pytest.warns(UserWarning, match=r"dropped the 1 lowest-ranked, kept 2"):
        out = capped.compress_documents(docs(TEXT_A, TEXT_B, TEXT_C), "q")
    assert [d.metadata["icformer_text"] for d in out] == [TEXT_A, TEXT_B]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # under the cap: nothing dropped, no warning
        assert len(capped.compress_documents(docs(TEXT_A), "q")) == 1
    with pytest.raises(ValueError):
        ICFormerCompressor.for_chat_model(chat, max_context_positions=0)


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
