"""LangChain adapter on the tiny random Llama: ICFormerCompressor, ChatICFormer, LCEL chains, bad input."""

from __future__ import annotations

import asyncio
import threading

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_icformer import ChatICFormer, ICFormerCompressor

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
PROMPT = ChatPromptTemplate.from_messages(
    [("system", "Answer from the context."), ("human", "Context:\n{context}\n\nQuestion: {question}")]
)


@pytest.fixture()
def chat(soft_lm) -> ChatICFormer:
    return ChatICFormer(lm=soft_lm, store=DigestStore(), max_tokens=6)


@pytest.fixture()
def lc_compressor(chat) -> ICFormerCompressor:
    return ICFormerCompressor.for_chat_model(chat)


def docs(*texts: str) -> list[Document]:
    return [Document(page_content=t, metadata={"source": f"doc{i}", "i": i}, id=f"id-{i}") for i, t in enumerate(texts)]


def format_docs(documents: list[Document]) -> str:
    return "\n".join(d.page_content for d in documents)


# ------------------------------------------------------------------------------------------ compressor
def test_compress_documents_keeps_ids_and_metadata(lc_compressor, compressor):
    originals = docs(TEXT_A, TEXT_B)
    out = lc_compressor.compress_documents(originals, "Who founded Velmora?")
    assert [d.id for d in out] == ["id-0", "id-1"]
    for doc, orig, text in zip(out, originals, (TEXT_A, TEXT_B), strict=True):
        key = key_for(text, compressor.fingerprint)
        assert doc.page_content == marker_for(key)
        assert {k: v for k, v in doc.metadata.items() if not k.startswith("icformer_")} == orig.metadata
        assert doc.metadata["icformer_digest_key"] == key and doc.metadata["icformer_cache_hit"] is False
        assert doc.metadata["icformer_tokens"] == len(compressor.tokenize([text])[0])
        assert doc.metadata["icformer_digests"] == len(lc_compressor.store.get(key)) > 0
    assert originals[0].page_content == TEXT_A and "icformer_digest_key" not in originals[0].metadata  # untouched
    again = lc_compressor.compress_documents(originals, "another question")
    assert [d.metadata["icformer_cache_hit"] for d in again] == [True, True]
    assert [d.page_content for d in again] == [d.page_content for d in out]


def test_one_batched_compression_per_call_sync_and_async(lc_compressor, compress_calls):
    lc_compressor.compress_documents(docs(TEXT_A, TEXT_B, "third"), "q")
    asyncio.run(lc_compressor.acompress_documents(docs("fourth", "fifth", TEXT_A), "q"))
    assert compress_calls == [[TEXT_A, TEXT_B, "third"], ["fourth", "fifth"]]


def test_index_documents_fills_the_store_so_queries_do_no_compression(soft_lm, compressor, tmp_path, monkeypatch):
    indexer = ICFormerCompressor(compressor=compressor, store=DigestStore(tmp_path / "digests"))
    keys = indexer.index_documents(docs(TEXT_A, TEXT_B))
    assert keys == [key_for(t, compressor.fingerprint) for t in (TEXT_A, TEXT_B)]
    # A later process: a fresh store over the same folder, and compression would fail if it were called.
    query_time = ICFormerCompressor(compressor=compressor, store=DigestStore(tmp_path / "digests"))
    monkeypatch.setattr(compressor, "compress", lambda *a, **k: pytest.fail("compressed at query time"))
    out = query_time.compress_documents(docs(TEXT_B, TEXT_A), "q")
    assert [d.metadata["icformer_cache_hit"] for d in out] == [True, True]
    chat = ChatICFormer(lm=soft_lm, store=query_time.store, max_tokens=4)
    assert chat.invoke(f"Read {out[0].page_content}").response_metadata["icformer_digest_keys"] == [keys[1]]


@pytest.mark.parametrize("kind", ["packed", "bytestore"])
def test_any_digest_store_serves_the_chat_model(soft_lm, compressor, tmp_path, kind):
    # The pydantic fields take every BaseDigestStore: the packed store and a LangChain ByteStore through KVDigestStore.
    from langchain_core.stores import InMemoryByteStore

    from icformer_rag import KVDigestStore, PackedDigestStore

    store = PackedDigestStore(tmp_path / "packed") if kind == "packed" else KVDigestStore(InMemoryByteStore())
    out = ICFormerCompressor(compressor=compressor, store=store).compress_documents(docs(TEXT_A), "q")
    assert out[0].metadata["icformer_cache_hit"] is False and len(store) == 1
    chat = ChatICFormer(lm=soft_lm, store=store, max_tokens=4)
    meta = chat.invoke(f"Read {out[0].page_content}").response_metadata
    assert meta["icformer_digest_keys"] == [key_for(TEXT_A, compressor.fingerprint)]


def test_compressor_bad_input(lc_compressor, compressor):
    assert lc_compressor.compress_documents([], "q") == []
    assert asyncio.run(lc_compressor.acompress_documents([], None)) == []
    for query in ("", None):
        assert len(lc_compressor.compress_documents(docs(TEXT_A), query)) == 1
    empty = lc_compressor.compress_documents(docs(""), "q")[0]
    assert empty.metadata["icformer_digests"] == 0 and empty.metadata["icformer_tokens"] == 0
    assert find_markers(empty.page_content) == [key_for("", compressor.fingerprint)]
    # Two documents with the same content: one digest, both documents kept with their own ids and metadata.
    dup = lc_compressor.compress_documents(docs(TEXT_A, TEXT_A), "q")
    assert dup[0].page_content == dup[1].page_content and [d.id for d in dup] == ["id-0", "id-1"]
    assert [d.metadata["i"] for d in dup] == [0, 1]
    # Far longer than a window: every window is compressed, nothing is truncated.
    long_text = "Velmora glass. " * 400
    n_tokens = len(compressor.tokenize([long_text])[0])
    long_doc = lc_compressor.compress_documents(docs(long_text), "q")[0]
    assert n_tokens > 10 * compressor.config.window_tokens
    assert long_doc.metadata["icformer_tokens"] == n_tokens
    assert long_doc.metadata["icformer_digests"] == sum(
        compressor.config.digests_for(min(compressor.config.window_tokens, n_tokens - s))
        for s in range(0, n_tokens, compressor.config.window_tokens)
    )
    # Metadata that is not JSON-serializable is carried through as the same objects.
    odd = {"lock": threading.Lock(), "func": len, "set": {1, 2}}
    out = lc_compressor.compress_documents([Document(page_content=TEXT_B, metadata=odd)], "q")[0]
    assert all(out.metadata[k] is v for k, v in odd.items()) and out.id is None
    with pytest.raises(TypeError, match="list of Documents"):
        lc_compressor.compress_documents(TEXT_A, "q")
    with pytest.raises(TypeError, match="document 1"):
        lc_compressor.compress_documents([Document(page_content="x"), "y"], "q")


# ---------------------------------------------------------------------------------------------- chat
def test_plain_chat_matches_soft_prompt_lm(chat, soft_lm):
    messages = [SystemMessage("Be brief."), HumanMessage("Hello, who are you?")]
    result = chat.invoke(messages)
    expected = soft_lm.generate_chat(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, who are you?"}],
        None,
        GenerationSettings(max_new_tokens=6),
    )
    assert isinstance(result, AIMessage) and result.content == expected.text
    assert result.usage_metadata == {
        "input_tokens": expected.prompt_tokens,
        "output_tokens": expected.completion_tokens,
        "total_tokens": expected.prompt_tokens + expected.completion_tokens,
    }
    assert result.response_metadata["icformer_digest_keys"] == []
    assert result.response_metadata["model_name"] == "tiny-random-llama"


def test_repetition_penalty_from_the_field_or_the_call(chat, soft_lm):
    """`repetition_penalty` (a field, or a per-call keyword) gives SoftPromptLM's penalised answer."""
    conversation = [{"role": "user", "content": "Tell me about glass, sand and lime."}]
    penalised = soft_lm.generate_chat(conversation, None, GenerationSettings(max_new_tokens=24, repetition_penalty=3.0))
    plain = soft_lm.generate_chat(conversation, None, GenerationSettings(max_new_tokens=24))
    assert penalised.text != plain.text
    message = [HumanMessage("Tell me about glass, sand and lime.")]
    field = ChatICFormer(lm=soft_lm, store=DigestStore(), max_tokens=24, repetition_penalty=3.0)
    assert field.invoke(message).content == penalised.text
    assert "".join(c.content for c in field.stream(message)) == penalised.text
    assert chat.invoke(message, max_tokens=24, repetition_penalty=3.0).content == penalised.text
    assert chat.invoke(message, max_tokens=24).content == plain.text
    with pytest.raises(ValueError):
        ChatICFormer(lm=soft_lm, repetition_penalty=0.0)


def test_markers_are_read_as_digests(chat, lc_compressor, soft_lm):
    out = lc_compressor.compress_documents(docs(TEXT_A, TEXT_B), "q")
    result = chat.invoke(f"Context:\n{out[0].page_content}\n{out[1].page_content}\n\nWho?")
    keys = [d.metadata["icformer_digest_key"] for d in out]
    assert result.response_metadata["icformer_digest_keys"] == keys
    prompt = soft_lm.build_chat_inputs([{"role": "user", "content": "x"}])
    digests = sum(len(chat.store.get(k)) + 2 for k in keys)
    assert result.usage_metadata["input_tokens"] > prompt.num_positions + digests - 1
    missing = marker_for("cd" * 12)
    with pytest.raises(ValueError, match=missing):
        chat.invoke(f"Read {missing}")


def test_key_terms_follow_the_marker_and_reach_the_llm(chat, lc_compressor, soft_lm):
    from icformer_rag import key_terms_line

    with_terms = ICFormerCompressor.for_chat_model(chat, key_terms=True)
    plain = lc_compressor.compress_documents(docs(TEXT_A, "no names here"), "q")
    out = with_terms.compress_documents(docs(TEXT_A, "no names here"), "q")
    line = key_terms_line(TEXT_A)
    assert line == "Names and numbers in this document: Ada Krenn; Velmora; 1723."
    assert out[0].page_content == plain[0].page_content + "\n" + line
    assert out[1].page_content == plain[1].page_content  # a text with no names or numbers gets no line
    assert out[0].metadata == {**plain[0].metadata, "icformer_cache_hit": True}  # same digest, from the store
    # The chat model resolves the marker and reads the line as text: the prompt grows by the line's tokens.
    used = [chat.invoke(f"Context:\n{d[0].page_content}\n\nWho?").usage_metadata["input_tokens"] for d in (plain, out)]
    added = len(soft_lm.tokenizer("\n" + line, add_special_tokens=False)["input_ids"])
    assert abs(used[1] - used[0] - added) <= 2


def test_stream_astream_ainvoke_batch_agree(chat):
    messages = [HumanMessage("Tell me about glass, please.")]
    invoked = chat.invoke(messages)
    chunks = list(chat.stream(messages))
    assert len(chunks) > 2 and chunks[-1].chunk_position == "last"
    assert "".join(c.content for c in chunks).strip() == invoked.content
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    assert total.usage_metadata == invoked.usage_metadata

    async def run() -> tuple:
        a = await chat.ainvoke(messages)
        parts = [c async for c in chat.astream(messages)]
        return a, parts

    ainvoked, achunks = asyncio.run(run())
    assert ainvoked.content == invoked.content
    assert "".join(c.content for c in achunks).strip() == invoked.content
    assert [m.content for m in chat.batch([messages, messages])] == [invoked.content] * 2
    streaming = chat.model_copy(update={"streaming": True})
    assert streaming.invoke(messages).content.strip() == invoked.content


def test_callbacks_get_tokens(chat):
    class Collect(BaseCallbackHandler):
        def __init__(self) -> None:
            self.tokens: list[str] = []
            self.ended = 0

        def on_llm_new_token(self, token: str, **kwargs) -> None:
            self.tokens.append(token)

        def on_llm_end(self, response, **kwargs) -> None:
            self.ended += 1

    handler = Collect()
    text = "".join(c.content for c in chat.stream("Hi there", config={"callbacks": [handler]}))
    assert "".join(handler.tokens) == text and handler.ended == 1


def test_stop_strings_cut_the_answer(chat):
    full = chat.invoke("Tell me about glass, please.", max_tokens=12).content
    assert len(full) > 4
    stop = full[3:5]
    cut = full[: full.find(stop)].rstrip()
    assert chat.invoke("Tell me about glass, please.", max_tokens=12, stop=[stop]).content == cut
    streamed = "".join(c.content for c in chat.stream("Tell me about glass, please.", max_tokens=12, stop=[stop]))
    assert streamed.rstrip() == cut


def test_empty_question_is_a_normal_prompt(chat, lc_compressor):
    assert isinstance(chat.invoke("").content, str)
    marker = lc_compressor.compress_documents(docs(""), "")[0].page_content  # an empty document, then no question
    assert chat.invoke(marker).response_metadata["icformer_digest_keys"] == find_markers(marker)


def test_message_content_blocks(chat):
    blocks = HumanMessage(content=[{"type": "text", "text": "Hello, "}, {"type": "text", "text": "friend"}])
    assert chat.invoke([blocks]).content == chat.invoke("Hello, friend").content
    with pytest.raises(ValueError, match="text only"):
        chat.invoke([HumanMessage(content=[{"type": "image", "url": "http://x/y.png"}])])


# ------------------------------------------------------------------------------------------ pipelines
def build_chain(chat: ChatICFormer, compressor: ICFormerCompressor, texts: list[str]):
    store = InMemoryVectorStore.from_texts(
        texts, DeterministicFakeEmbedding(size=32), metadatas=[{"n": i} for i in range(len(texts))]
    )
    retriever = store.as_retriever(search_kwargs={"k": 2})
    compress = RunnableLambda(
        lambda ds: compressor.compress_documents(ds, ""), afunc=lambda ds: compressor.acompress_documents(ds, "")
    )
    return (
        {"context": retriever | compress | format_docs, "question": RunnablePassthrough()}
        | PROMPT
        | chat
        | StrOutputParser()
    ), retriever


def test_lcel_chain_from_langchain_core_pieces(chat, lc_compressor):
    chain, retriever = build_chain(chat, lc_compressor, [TEXT_A, TEXT_B, "Rivers flow to the sea."])
    answer = chain.invoke("Who founded Velmora?")
    assert isinstance(answer, str)
    retrieved = retriever.invoke("Who founded Velmora?")
    keys = [key_for(d.page_content, lc_compressor.compressor.fingerprint) for d in retrieved]
    # The same chain up to the prompt shows the markers the chat model turned into digests.
    prompt_value = (
        {
            "context": retriever | RunnableLambda(lambda ds: lc_compressor.compress_documents(ds, "")) | format_docs,
            "question": RunnablePassthrough(),
        }
        | PROMPT
    ).invoke("Who founded Velmora?")
    assert find_markers(prompt_value.to_messages()[1].content) == keys
    assert answer == chat.invoke(prompt_value).content


def test_contextual_compression_retriever(chat, lc_compressor):
    retrievers = pytest.importorskip("langchain_classic.retrievers")
    store = InMemoryVectorStore.from_texts([TEXT_A, TEXT_B], DeterministicFakeEmbedding(size=32))
    retriever = retrievers.ContextualCompressionRetriever(
        base_compressor=lc_compressor, base_retriever=store.as_retriever(search_kwargs={"k": 2})
    )
    found = retriever.invoke("Who founded Velmora?")
    assert len(found) == 2 and all(find_markers(d.page_content) for d in found)
    chain = {"context": retriever | format_docs, "question": RunnablePassthrough()} | PROMPT | chat | StrOutputParser()
    assert isinstance(chain.invoke("Who founded Velmora?"), str)
    assert len(asyncio.run(retriever.ainvoke("glass"))) == 2


# ------------------------------------------------------------------------------------------ concurrency
def own_docs(i: int) -> list[Document]:
    return docs(f"Record {i}: the bell of tower {i} was cast in {1700 + i}.", f"Record {i}: tower {i} is stone.")


def ask_messages(compressed: list[Document], i: int) -> list:
    return [HumanMessage(f"Context:\n{format_docs(compressed)}\n\nWhen was bell {i} cast?")]


def test_concurrent_threads_keep_each_answer_on_its_own_documents(chat, lc_compressor):
    def work(i: int) -> tuple[list[str], list[str]]:
        compressed = lc_compressor.compress_documents(own_docs(i), "q")
        reply = chat.invoke(ask_messages(compressed, i))
        return (
            [d.metadata["icformer_digest_key"] for d in compressed],
            reply.response_metadata["icformer_digest_keys"],
        )

    results = run_in_threads(work, 8)
    assert len(results) == 8
    fp = lc_compressor.compressor.fingerprint
    for i, (compressed_keys, read_keys) in results.items():
        assert read_keys == compressed_keys == [key_for(d.page_content, fp) for d in own_docs(i)]


def test_concurrent_asyncio_keeps_each_answer_on_its_own_documents(chat, lc_compressor):
    async def one(i: int) -> tuple[int, list[str]]:
        compressed = await lc_compressor.acompress_documents(own_docs(i), "q")
        if i % 2:
            reply = await chat.ainvoke(ask_messages(compressed, i))
            return i, reply.response_metadata["icformer_digest_keys"]
        chunks = [c async for c in chat.astream(ask_messages(compressed, i))]
        return i, chunks[-1].response_metadata["icformer_digest_keys"]

    async def main() -> list[tuple[int, list[str]]]:
        return await asyncio.gather(*(one(i) for i in range(8)))

    fp = lc_compressor.compressor.fingerprint
    for i, keys in asyncio.run(main()):
        assert keys == [key_for(d.page_content, fp) for d in own_docs(i)]
