"""End to end on CPU with the real libraries: sample documents -> all-MiniLM-L6-v2 (offline) -> FAISS ->
ICFormerCompressor -> ChatPromptTemplate -> ChatICFormer (default LLM + shipped compressor) -> StrOutputParser."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("faiss")
lc_faiss = pytest.importorskip("langchain_community.vectorstores")
lc_hf = pytest.importorskip("langchain_huggingface")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnableLambda, RunnablePassthrough  # noqa: E402
from langchain_icformer import ChatICFormer, ICFormerCompressor  # noqa: E402

from icformer_rag import DigestStore, find_markers, key_for  # noqa: E402
from icformer_rag.testing import QUESTION, sample_paragraphs  # noqa: E402

pytestmark = pytest.mark.slow

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question using the context below."),
        ("human", "{context}\n\nQuestion: {question}"),
    ]
)


def format_docs(docs: list[Document]) -> str:
    return "\n".join(d.page_content for d in docs)


@pytest.fixture(scope="module")
def retriever(minilm_path):
    embeddings = lc_hf.HuggingFaceEmbeddings(model_name=minilm_path, model_kwargs={"device": "cpu"})
    docs = [
        Document(page_content=text, metadata={"source": name}, id=f"{name}#{i}")
        for i, (name, text) in enumerate(sample_paragraphs())
    ]
    index = lc_faiss.FAISS.from_documents(docs, embeddings)
    return index.as_retriever(search_kwargs={"k": 3})


@pytest.fixture(scope="module")
def chat(default_lm, tmp_path_factory):
    return ChatICFormer(lm=default_lm, store=DigestStore(tmp_path_factory.mktemp("digests")), max_tokens=48)


def test_from_default_loads_the_default_llm_and_checkpoint():
    chat = ChatICFormer.from_default(device="cpu", dtype="float32", max_tokens=8)
    assert chat.model_name == "SmolLM2-135M-Instruct" and chat.lm.compressor is not None
    assert isinstance(chat.invoke("Say hello.").content, str)


def test_retriever_finds_the_right_passage(retriever):
    assert retriever.invoke(QUESTION)[0].metadata["source"] == "velmora.txt"


def test_lcel_chain_core_only(retriever, chat):
    compressor = ICFormerCompressor.for_chat_model(chat)
    compress = RunnableLambda(
        lambda docs: compressor.compress_documents(docs, QUESTION),
        afunc=lambda docs: compressor.acompress_documents(docs, QUESTION),
    )
    chain = (
        {"context": retriever | compress | format_docs, "question": RunnablePassthrough()}
        | PROMPT
        | chat
        | StrOutputParser()
    )
    answer = chain.invoke(QUESTION)
    assert isinstance(answer, str) and answer
    streamed = "".join(chain.stream(QUESTION))
    assert streamed.strip() == answer
    assert asyncio.run(chain.ainvoke(QUESTION)) == answer
    # The answer read the digests of exactly the retrieved passages.
    fp = compressor.compressor.fingerprint
    keys = [key_for(d.page_content, fp) for d in retriever.invoke(QUESTION)]
    reply = ({"context": retriever | compress | format_docs, "question": RunnablePassthrough()} | PROMPT | chat).invoke(
        QUESTION
    )
    assert reply.response_metadata["icformer_digest_keys"] == keys
    assert reply.usage_metadata["input_tokens"] > 0 and reply.usage_metadata["output_tokens"] > 0


def test_contextual_compression_retriever_chain(retriever, chat):
    retrievers = pytest.importorskip("langchain_classic.retrievers")
    compressed = retrievers.ContextualCompressionRetriever(
        base_compressor=ICFormerCompressor.for_chat_model(chat), base_retriever=retriever
    )
    docs = compressed.invoke(QUESTION)
    assert docs[0].metadata["source"] == "velmora.txt" and all(find_markers(d.page_content) for d in docs)
    assert all(d.metadata["icformer_cache_hit"] for d in compressed.invoke(QUESTION))  # digests reused
    chain = {"context": compressed | format_docs, "question": RunnablePassthrough()} | PROMPT | chat | StrOutputParser()
    assert isinstance(chain.invoke(QUESTION), str)


def test_full_text_baseline_through_the_same_chat_model(retriever, chat):
    """No compressor in the chain: the chat model is a plain local chat model and reads the passages' text."""
    chain = {"context": retriever | format_docs, "question": RunnablePassthrough()} | PROMPT | chat | StrOutputParser()
    answer = chain.invoke(QUESTION)
    assert "Krenn" in answer and "1723" in answer
