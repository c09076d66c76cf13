"""Issue 16 items 7, 9 and 10 for LangChain, on the tiny random Llama: markers outside the project's own models,
token accounting, a context budget. Each test's docstring holds the repro that failed before the fix."""

from __future__ import annotations

import asyncio
import warnings

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models import FakeListChatModel
from langchain_icformer import ChatICFormer, ICFormerCompressor

from icformer_rag import DigestStore, find_markers, key_for, marker_for

TEXT_A = "The town of Velmora was founded in 1723 by Ada Krenn, a glassmaker."
TEXT_B = "Glass is made from sand, soda and lime. " * 6
TEXT_C = "Velmora's harbour froze in the winter of 1801, and the glassworks closed for a year."


@pytest.fixture()
def chat(soft_lm) -> ChatICFormer:
    return ChatICFormer(lm=soft_lm, store=DigestStore(), max_tokens=4)


@pytest.fixture()
def lc_compressor(chat) -> ICFormerCompressor:
    return ICFormerCompressor.for_chat_model(chat)


def docs(*texts: str) -> list[Document]:
    return [Document(page_content=t, metadata={"source": f"doc{i}"}, id=f"id-{i}") for i, t in enumerate(texts)]


def positions(store: DigestStore, text: str, compressor) -> int:
    """What a marker of `text`'s digest takes in the prompt: the vectors, BEGIN and END."""
    return len(store.get(key_for(text, compressor.fingerprint))) + 2


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
