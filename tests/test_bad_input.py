"""Issue 2's bad inputs: each gives a correct result or a clear ValueError/TypeError naming the problem."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

from icformer_rag import ContextCompressor, Digest, GenerationSettings, load_compressor
from icformer_rag.windows import split_windows

SHORT = GenerationSettings(max_new_tokens=4)

SCRIPTS = {
    "chinese": "威尔莫拉镇由玻璃工匠阿达·克伦于1723年建立。",
    "arabic": "تأسست بلدة فيلمورا عام 1723 على يد آدا كرين، صانعة الزجاج.",
    "hindi": "वेल्मोरा शहर की स्थापना 1723 में काँच बनाने वाली एडा क्रेन ने की थी।",
    "cyrillic": "Город Вельмора основала в 1723 году стеклодув Ада Кренн.",
    "emoji": "👩‍👩‍👧‍👦 🏳️‍🌈 👍🏽 🇯🇵 ❤️‍🔥 family, flag, thumbs, Japan, heart on fire",
    "mixed": "Velmora 威尔莫拉 فيلمورا वेल्मोरा Вельмора 🧑🏾‍🔬\u200d\ufeff e\u0301 \x00\t\r\n end",
}


def token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ------------------------------------------------------------------------------------ empty documents
def test_no_documents_gives_no_digests(compressor):
    assert compressor.compress([]) == []
    assert compressor.compress(()) == []
    assert compressor.tokenize([]) == []
    assert compressor.compress_ids([]) == []


def test_empty_text_gives_an_empty_digest(compressor, soft_lm, tokenizer):
    d = compressor.compress([""])[0]
    assert len(d) == 0 and d.num_tokens == 0 and d.window_digests == []
    assert d.embeddings.shape == (0, compressor.config.hidden_size)
    assert d.embeddings.dtype == compressor.dtype
    assert d.content_hash == hashlib.sha256(b"").hexdigest()
    assert d.compression == 0
    # The LLM still reads the context slot (BEGIN, END) and answers.
    with_empty = soft_lm.build_inputs("Q?", [d]).shape[0]
    without = soft_lm.build_inputs("Q?", []).shape[0]
    assert with_empty > without
    assert isinstance(soft_lm.generate("Q?", [d], SHORT), str)
    assert isinstance(soft_lm.generate("", [""], SHORT), str)


@pytest.mark.parametrize("text", [" ", "   ", "\n\n", "\t \n", "\u3000"])
def test_whitespace_is_compressed_like_any_text(compressor, tokenizer, text):
    d = compressor.compress([text])[0]
    n = len(token_ids(tokenizer, text))
    assert n > 0 and d.num_tokens == n
    assert len(d) == math.ceil(n / compressor.config.ratio)


def test_empty_and_real_documents_mix(compressor):
    texts = ["", "Some real text about glass.", "   ", "", "More text."]
    together = compressor.compress(texts)
    assert [len(d) == 0 for d in together] == [True, False, False, True, False]
    for text, d in zip(texts, together, strict=True):
        torch.testing.assert_close(d.embeddings, compressor.compress([text])[0].embeddings, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ wrong types
@pytest.mark.parametrize(
    "bad, index, kind", [(None, 1, "NoneType"), (b"bytes", 1, "bytes"), (3, 1, "int"), (["nested"], 1, "list")]
)
def test_non_string_items_raise_type_error_naming_the_index(compressor, bad, index, kind):
    with pytest.raises(TypeError, match=f"text {index} is a {kind}"):
        compressor.compress(["fine", bad, "also fine"])


def test_a_bare_string_raises_type_error(compressor):
    with pytest.raises(TypeError, match=r"\[text\]"):
        compressor.compress("a single document")


@pytest.mark.parametrize("bad", [None, 42, {"a", "b"}, (t for t in ["a"])])
def test_non_lists_raise_type_error(compressor, bad):
    with pytest.raises(TypeError, match="list of texts"):
        compressor.compress(bad)


def test_invalid_unicode_raises_value_error(compressor):
    with pytest.raises(ValueError, match="text 1 is not valid Unicode"):
        compressor.compress(["fine", "lone surrogate \ud800 here"])


# ------------------------------------------------------------------------------------ scripts and emoji
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_any_script_and_emoji_compress(compressor, tokenizer, name):
    text = SCRIPTS[name]
    d = compressor.compress([text])[0]
    ids = token_ids(tokenizer, text)
    assert d.num_tokens == len(ids) > 0
    assert d.window_digests == [math.ceil(len(w) / 4) for w in split_windows(ids, compressor.config.window_tokens)]
    assert d.content_hash == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert torch.isfinite(d.embeddings).all()


def test_any_script_in_a_batch_and_in_generation(compressor, soft_lm):
    texts = list(SCRIPTS.values())
    digests = compressor.compress(texts)
    for text, d in zip(texts, digests, strict=True):
        torch.testing.assert_close(d.embeddings, compressor.compress([text])[0].embeddings, atol=1e-5, rtol=1e-5)
    assert isinstance(soft_lm.generate("Кто основал Вельмору? 谁? 🤔", digests, SHORT), str)
    assert isinstance(soft_lm.generate("谁建立了威尔莫拉？", [SCRIPTS["chinese"]], SHORT), str)


# ------------------------------------------------------------------------------ a 100,000-token document
def test_a_100k_token_document_is_compressed_whole(compressor, soft_lm, tokenizer):
    text = "alpha beta gamma delta " * 25_000
    ids = token_ids(tokenizer, text)
    assert len(ids) >= 100_000
    windows = split_windows(ids, compressor.config.window_tokens)
    d = compressor.compress([text])[0]
    assert d.num_tokens == len(ids) == sum(len(w) for w in windows)  # nothing truncated
    assert len(d.window_digests) == len(windows) == math.ceil(len(ids) / compressor.config.window_tokens)
    assert d.window_digests == [math.ceil(len(w) / compressor.config.ratio) for w in windows]
    assert len(d) == sum(d.window_digests)
    assert torch.isfinite(d.embeddings).all()
    # The last (short) window really is the document's tail.
    tail = compressor.compress_windows([windows[-1]])[0]
    torch.testing.assert_close(d.embeddings[-len(tail) :], tail, atol=1e-5, rtol=1e-5)
    # Far too long for the tiny LLM's 1024 positions: a clear error, not a crash inside the model.
    with pytest.raises(ValueError, match="positions"):
        soft_lm.generate("Q?", [d], SHORT)


# ----------------------------------------------------------------------------------- devices and dtypes
@pytest.mark.parametrize("device", ["tpu", "banana", "cpu:x"])
def test_wrong_device_raises(device):
    with pytest.raises(ValueError, match="device"):
        load_compressor(device=device)


@pytest.mark.parametrize("dtype", ["int8", torch.int64, "float64"])
def test_wrong_dtype_raises(tiny_llm, tokenizer, compressor, compressor_kwargs, tmp_path, dtype):
    with pytest.raises(ValueError, match="dtype"):
        ContextCompressor.from_llm(tiny_llm, tokenizer, dtype=dtype, **compressor_kwargs)
    compressor.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="dtype"):
        ContextCompressor.from_pretrained(tmp_path, tiny_llm, tokenizer, dtype=dtype)
    with pytest.raises(ValueError, match="dtype"):
        load_compressor(tmp_path, "/nonexistent/model", device="cpu", dtype=dtype)


def test_digests_in_another_dtype_are_cast_for_the_llm(compressor, soft_lm):
    d = compressor.compress(["Some text."])[0]
    as_bf16 = d.to(dtype=torch.bfloat16)
    embeds = soft_lm.build_inputs("Q?", [as_bf16])
    assert embeds.dtype == torch.float32
    assert embeds.shape == soft_lm.build_inputs("Q?", [d]).shape


def test_a_forged_digest_of_the_wrong_width_raises(compressor, soft_lm):
    forged = Digest(torch.zeros(3, 32), 12, "h", compressor.fingerprint)
    with pytest.raises(ValueError, match="wide"):
        soft_lm.build_inputs("Q?", [forged])


# ----------------------------------------------------------------------------------- another LLM's files
def test_checkpoint_for_another_llm_raises(compressor, tokenizer, llm_factory, tmp_path):
    compressor.save_pretrained(tmp_path)
    bigger_vocab = llm_factory(len(tokenizer) + 64, name="bigger-vocab-llama")
    with pytest.raises(ValueError, match="vocabulary size") as err:
        ContextCompressor.from_pretrained(tmp_path, bigger_vocab, tokenizer)
    assert "tiny-random-llama" in str(err.value) and "bigger-vocab-llama" in str(err.value)


def test_a_tokenizer_that_is_not_the_llms_raises(tokenizer, llm_factory, compressor_kwargs):
    small_vocab = llm_factory(1000, name="small-vocab-llama")
    c = ContextCompressor.from_llm(small_vocab, tokenizer, **compressor_kwargs)
    with pytest.raises(ValueError, match="vocabulary"):
        c.compress(["Velmora was founded by a glassmaker."])
