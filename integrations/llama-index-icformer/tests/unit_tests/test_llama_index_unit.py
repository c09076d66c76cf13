"""LlamaIndex adapter on the tiny random Llama: postprocessor, LLM, ingestion transform, query engine, bad input."""

from __future__ import annotations

import asyncio
import threading

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import ImageNode, MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.llms.icformer import ICFormerLLM
from llama_index.postprocessor.icformer import ICFormerDigestTransform, ICFormerNodePostprocessor
from llama_index_samples import digests_read

from icformer_rag import (
    DigestStore,
    GenerationSettings,
    find_markers,
    key_for,
    marker_for,
)
from icformer_rag.testing import run_in_threads

TEXT_A = "The town of Velmora was founded in 1723 by Ada Krenn, a glassmaker."
TEXT_B = "Glass is made from sand, soda and lime. " * 6


@pytest.fixture()
def llm(soft_lm) -> ICFormerLLM:
    return ICFormerLLM(soft_lm, DigestStore(), max_new_tokens=6)


@pytest.fixture()
def post(llm) -> ICFormerNodePostprocessor:
    return ICFormerNodePostprocessor.for_llm(llm)


@pytest.fixture(scope="module")
def embed_model(minilm_path):
    hf = pytest.importorskip("llama_index.embeddings.huggingface")
    return hf.HuggingFaceEmbedding(model_name=minilm_path, device="cpu")


def scored(*texts: str) -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=t, id_=f"node-{i}", metadata={"source": f"doc{i}"}), score=1.0 - i / 10)
        for i, t in enumerate(texts)
    ]


# --------------------------------------------------------------------------------------- postprocessor
def test_postprocessor_keeps_ids_metadata_scores(post, compressor):
    nodes = scored(TEXT_A, TEXT_B)
    out = post.postprocess_nodes(nodes, query_str="Who founded Velmora?")
    assert [n.node.node_id for n in out] == ["node-0", "node-1"] and [n.score for n in out] == [1.0, 0.9]
    for n, orig, text in zip(out, nodes, (TEXT_A, TEXT_B), strict=True):
        key = key_for(text, compressor.fingerprint)
        assert n.node.get_content() == marker_for(key)
        assert n.node.metadata["source"] == orig.node.metadata["source"]
        assert n.node.metadata["icformer_digest_key"] == key and n.node.metadata["icformer_cache_hit"] is False
        # The LLM sees the ordinary metadata and the marker, not the bookkeeping.
        assert "icformer" not in n.node.get_content(metadata_mode=MetadataMode.LLM).replace(marker_for(key), "")
    assert nodes[0].node.text == TEXT_A and "icformer_digest_key" not in nodes[0].node.metadata  # untouched
    again = asyncio.run(post.apostprocess_nodes(nodes, QueryBundle("other")))
    assert [n.node.metadata["icformer_cache_hit"] for n in again] == [True, True]


def test_postprocessor_key_terms_follow_the_marker(llm, post):
    from icformer_rag import key_terms_line

    with_terms = ICFormerNodePostprocessor.for_llm(llm, key_terms=True)
    assert with_terms.key_terms and not post.key_terms
    plain = post.postprocess_nodes(scored(TEXT_A))[0]
    out = with_terms.postprocess_nodes(scored(TEXT_A))[0]
    assert out.node.get_content() == plain.node.get_content() + "\n" + key_terms_line(TEXT_A)
    assert out.node.metadata["icformer_cache_hit"] is True  # same store: the digest was made once
    assert "Ada Krenn; Velmora; 1723" in out.node.get_content(metadata_mode=MetadataMode.LLM)


def test_postprocessor_one_batched_compression(post, compress_calls):
    post.postprocess_nodes(scored(TEXT_A, TEXT_B, "third"))
    asyncio.run(post.apostprocess_nodes(scored("fourth", TEXT_A)))
    assert compress_calls == [[TEXT_A, TEXT_B, "third"], ["fourth"]]


def test_postprocessor_bad_input(post, compressor):
    assert post.postprocess_nodes([]) == []
    assert post.postprocess_nodes([], query_str="") == []
    assert len(post.postprocess_nodes(scored(TEXT_A), None)) == 1
    empty = post.postprocess_nodes(scored(""))[0]
    assert empty.node.metadata["icformer_digests"] == 0
    dup = post.postprocess_nodes(scored(TEXT_A, TEXT_A))
    assert dup[0].node.get_content() == dup[1].node.get_content() and dup[0].node.node_id != dup[1].node.node_id
    long_text = "Velmora glass. " * 400
    long_node = post.postprocess_nodes(scored(long_text))[0]
    assert long_node.node.metadata["icformer_tokens"] > 10 * compressor.config.window_tokens
    odd = {"lock": threading.Lock(), "set": {1, 2}}
    node = NodeWithScore(node=TextNode(text=TEXT_B, metadata=dict(odd)), score=None)
    out = post.postprocess_nodes([node])[0]
    assert out.node.metadata["lock"] is odd["lock"] and out.score is None
    with pytest.raises(TypeError, match="text nodes"):
        post.postprocess_nodes([NodeWithScore(node=ImageNode(image="aGk="), score=1.0)])
    with pytest.raises(TypeError, match="NodeWithScore"):
        post.postprocess_nodes([TextNode(text="x")])


# ------------------------------------------------------------------------------------------------- LLM
def test_chat_and_complete_match_soft_prompt_lm(llm, soft_lm):
    expected = soft_lm.generate_chat(
        [{"role": "user", "content": "Hello there"}], None, GenerationSettings(max_new_tokens=6)
    )
    assert llm.complete("Hello there").text == expected.text
    response = llm.chat([ChatMessage(role=MessageRole.USER, content="Hello there")])
    assert response.message.content == expected.text
    assert response.additional_kwargs["prompt_tokens"] == expected.prompt_tokens
    assert response.additional_kwargs["completion_tokens"] == expected.completion_tokens
    assert llm.metadata.is_chat_model and llm.metadata.context_window == 1024


def test_repetition_penalty_from_the_field_or_the_call(llm, soft_lm):
    """`repetition_penalty` (a field, or a per-call keyword) gives SoftPromptLM's penalised answer."""
    conversation = [{"role": "user", "content": "Tell me about glass, sand and lime."}]
    penalised = soft_lm.generate_chat(conversation, None, GenerationSettings(max_new_tokens=24, repetition_penalty=3.0))
    plain = soft_lm.generate_chat(conversation, None, GenerationSettings(max_new_tokens=24))
    assert penalised.text != plain.text
    field = ICFormerLLM(soft_lm, DigestStore(), max_new_tokens=24, repetition_penalty=3.0)
    assert field.complete("Tell me about glass, sand and lime.").text == penalised.text
    message = [ChatMessage(role=MessageRole.USER, content="Tell me about glass, sand and lime.")]
    assert list(field.stream_chat(message))[-1].message.content.strip() == penalised.text
    assert llm.chat(message, max_new_tokens=24, repetition_penalty=3.0).message.content == penalised.text
    assert llm.chat(message, max_new_tokens=24).message.content == plain.text
    with pytest.raises(ValueError):
        ICFormerLLM(soft_lm, DigestStore(), repetition_penalty=0.0)


def test_streams_and_async_agree(llm):
    full = llm.complete("Tell me about glass.").text
    streamed = list(llm.stream_complete("Tell me about glass."))
    assert len(streamed) > 2 and streamed[-1].text == "".join(r.delta for r in streamed)
    assert streamed[-1].text.strip() == full and streamed[-1].additional_kwargs["completion_tokens"] >= 1
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="Be brief."),
        ChatMessage(role=MessageRole.USER, content="Tell me about glass."),
    ]
    chat_full = llm.chat(messages).message.content
    assert list(llm.stream_chat(messages))[-1].message.content.strip() == chat_full

    async def run() -> tuple:
        a = await llm.acomplete("Tell me about glass.")
        b = await llm.achat(messages)
        c = [r async for r in await llm.astream_complete("Tell me about glass.")]
        d = [r async for r in await llm.astream_chat(messages)]
        return a, b, c, d

    a, b, c, d = asyncio.run(run())
    assert a.text == full and b.message.content == chat_full
    assert c[-1].text.strip() == full and d[-1].message.content.strip() == chat_full


def test_empty_prompt_and_empty_node(llm, post):
    assert isinstance(llm.complete("").text, str)
    marker = post.postprocess_nodes(scored(""))[0].node.get_content()
    assert llm.complete(marker).additional_kwargs["icformer_digest_keys"] == find_markers(marker)


def test_markers_read_as_digests_and_missing_ones_named(llm, post):
    out = post.postprocess_nodes(scored(TEXT_A, TEXT_B))
    keys = [n.node.metadata["icformer_digest_key"] for n in out]
    response = llm.complete("Context:\n" + "\n".join(n.node.get_content() for n in out) + "\nWho?")
    assert response.additional_kwargs["icformer_digest_keys"] == keys
    missing = marker_for("ef" * 12)
    with pytest.raises(ValueError, match=missing):
        llm.complete(f"Read {missing}")
    with pytest.raises(ValueError, match="text only"):
        llm.chat([ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text="hi"), ImageBlock(url="http://x/y.png")])])


# ------------------------------------------------------------------------------------------- pipelines
def test_ingestion_transform_fills_the_store_so_queries_do_no_compression(
    llm, embed_model, compressor, tmp_path, monkeypatch
):
    store = DigestStore(tmp_path / "digests")
    indexing_llm = ICFormerLLM(llm.lm, store, max_new_tokens=6)
    pipeline = IngestionPipeline(
        transformations=[
            SentenceSplitter(chunk_size=64, chunk_overlap=0),
            ICFormerDigestTransform.for_llm(indexing_llm),
            embed_model,
        ]
    )
    nodes = pipeline.run(
        documents=[Document(text=TEXT_A, metadata={"source": "a"}), Document(text=TEXT_B, metadata={"source": "b"})]
    )
    assert all(n.metadata["icformer_digest_key"] in store for n in nodes)
    assert all("icformer" not in n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes)
    index = VectorStoreIndex(nodes, embed_model=embed_model)
    # Query time, a fresh store over the same folder: compression would fail if it were called.
    query_llm = ICFormerLLM(llm.lm, DigestStore(tmp_path / "digests"), max_new_tokens=6)
    monkeypatch.setattr(compressor, "compress", lambda *a, **k: pytest.fail("compressed at query time"))
    post = ICFormerNodePostprocessor.for_llm(query_llm)
    engine = index.as_query_engine(llm=query_llm, node_postprocessors=[post], similarity_top_k=2)
    response = engine.query("Who founded Velmora?")
    assert isinstance(response.response, str)
    assert all(n.node.metadata["icformer_cache_hit"] for n in response.source_nodes)
    assert asyncio.run(ICFormerDigestTransform.for_llm(query_llm).acall(nodes)) is not None


def test_query_engine_reads_the_digests_of_the_retrieved_nodes(llm, post, embed_model):
    index = VectorStoreIndex(
        [TextNode(text=t, id_=f"n{i}") for i, t in enumerate([TEXT_A, TEXT_B, "Rivers."])], embed_model=embed_model
    )
    engine = index.as_query_engine(llm=llm, node_postprocessors=[post], similarity_top_k=2)
    with digests_read() as seen:  # what each chat call read
        response = engine.query("Who founded Velmora?")
    retrieved = [n.node.metadata["icformer_digest_key"] for n in response.source_nodes]
    assert len(retrieved) == 2 and seen and seen[0] == retrieved
    assert find_markers(response.source_nodes[0].node.get_content()) == [retrieved[0]]
    assert isinstance(asyncio.run(engine.aquery("Who founded Velmora?")).response, str)
    streaming = index.as_query_engine(llm=llm, node_postprocessors=[post], similarity_top_k=2, streaming=True)
    assert isinstance(streaming.query("Who founded Velmora?").get_response().response, str)


# ----------------------------------------------------------------------------------------- concurrency
def own_nodes(i: int) -> list[NodeWithScore]:
    return scored(f"Record {i}: the bell of tower {i} was cast in {1700 + i}.", f"Record {i}: tower {i} is stone.")


def test_concurrent_threads_and_asyncio_keep_answers_on_their_own_nodes(llm, post, compressor):
    fp = compressor.fingerprint
    expected = {i: [key_for(n.node.get_content(), fp) for n in own_nodes(i)] for i in range(8)}

    def ask(i: int, nodes: list[NodeWithScore]) -> str:
        return "Context:\n" + "\n".join(n.node.get_content() for n in nodes) + f"\nWhen was bell {i} cast?"

    def work(i: int) -> list[str]:
        return llm.complete(ask(i, post.postprocess_nodes(own_nodes(i)))).additional_kwargs["icformer_digest_keys"]

    assert run_in_threads(work, 8) == expected

    async def one(i: int) -> tuple[int, list[str]]:
        nodes = await post.apostprocess_nodes(own_nodes(i))
        if i % 2:
            return i, (await llm.acomplete(ask(i, nodes))).additional_kwargs["icformer_digest_keys"]
        chunks = [r async for r in await llm.astream_complete(ask(i, nodes))]
        return i, chunks[-1].additional_kwargs["icformer_digest_keys"]

    async def main() -> list:
        return await asyncio.gather(*(one(i) for i in range(8)))

    assert dict(asyncio.run(main())) == expected
