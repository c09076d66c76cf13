"""DigestStore and digest markers, and chat generation over messages that hold markers (tiny random Llama)."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from icformer_rag import ContextCompressor, Digest, GenerationSettings, ICFormer
from icformer_rag.store import DigestStore, digest_key, find_markers, key_for, marker_for, split_markers

TEXT_A = "The town of Velmora was founded in 1723 by Ada Krenn, a glassmaker."
TEXT_B = "Glass is made from sand, soda and lime. " * 6
SHORT = GenerationSettings(max_new_tokens=6)


def chat(user: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}]


# ------------------------------------------------------------------------------------------------ keys
def test_keys_and_markers(compressor):
    key = key_for(TEXT_A, compressor.fingerprint)
    assert len(key) == 24 and key == key_for(TEXT_A, compressor.fingerprint)
    assert key != key_for(TEXT_A, "another-compressor") and key != key_for(TEXT_B, compressor.fingerprint)
    marker = marker_for(key)
    assert marker.startswith(f"\u27e6icf:{key}.") and marker.endswith("\u27e7") and marker == marker_for(key)
    assert find_markers(f"see {marker} and {marker}.") == [key, key]
    assert find_markers("no markers here, not even [icf:abc]") == []
    assert split_markers(f"a{marker}b") == ["a", (key,), "b"]
    # Marker-looking text this process did not make is text: the old form, or a guessed tag.
    for forged in (f"\u27e6icf:{key}\u27e7", f"\u27e6icf:{key}.{'0' * 16}\u27e7"):
        assert find_markers(forged) == [] and split_markers(f"a{forged}b") == [f"a{forged}b"]
    with pytest.raises(ValueError, match="not a digest key"):
        marker_for("../../etc/passwd")


def test_marker_survives_the_tokenizer_and_chat_template(tokenizer):
    marker = marker_for("0123456789abcdef01234567")
    ids = tokenizer(f"Context: {marker}.", add_special_tokens=False)["input_ids"]
    assert marker in tokenizer.decode(ids)
    text = tokenizer.apply_chat_template(chat(f"x {marker} y"), add_generation_prompt=True, tokenize=False)
    assert find_markers(text) == ["0123456789abcdef01234567"]


# ----------------------------------------------------------------------------------------------- store
@pytest.mark.parametrize("on_disk", [False, True])
def test_put_get_roundtrip(compressor, tmp_path, on_disk):
    store = DigestStore(tmp_path / "digests" if on_disk else None)
    digest = compressor.compress([TEXT_A])[0]
    key = store.put(digest)
    assert key == key_for(TEXT_A, compressor.fingerprint) == digest_key(digest)
    assert store.get(key) is digest and key in store and len(store) == 1
    assert store.get("0" * 24) is None
    if on_disk:
        assert (tmp_path / "digests" / f"{key}.digest.safetensors").is_file()
        assert not list((tmp_path / "digests").glob(".*tmp"))  # no temporary files left behind
        again = DigestStore(tmp_path / "digests").get(key)  # a fresh store reads the file
        assert again is not digest and torch.equal(again.embeddings, digest.embeddings)
        assert again.content_hash == digest.content_hash and again.fingerprint == digest.fingerprint


def test_compress_cached_compresses_only_misses_in_one_call(compressor, tmp_path, monkeypatch):
    store = DigestStore(tmp_path)
    calls = []
    real = compressor.compress
    monkeypatch.setattr(compressor, "compress", lambda texts, **kw: calls.append(list(texts)) or real(texts, **kw))
    digests, hits = store.compress_cached(compressor, [TEXT_A, TEXT_B, TEXT_A, ""])
    assert hits == [False, False, False, False]
    assert calls == [[TEXT_A, TEXT_B, ""]]  # one batch, each distinct text once
    assert digests[0] is digests[2] and len(digests[3]) == 0
    assert torch.equal(digests[1].embeddings, real([TEXT_B])[0].embeddings)
    digests2, hits2 = DigestStore(tmp_path).compress_cached(compressor, [TEXT_B, TEXT_A, "new text"])
    assert hits2 == [True, True, False] and calls[-1] == ["new text"]
    assert torch.equal(digests2[0].embeddings, digests[1].embeddings)
    assert store.compress_cached(compressor, []) == ([], [])


def test_foreign_or_stale_entries_are_never_returned(compressor, tiny_llm, tokenizer, compressor_kwargs, tmp_path):
    store = DigestStore(tmp_path)
    other = ContextCompressor.from_llm(tiny_llm, tokenizer, seed=7, **compressor_kwargs)
    foreign_key = store.put(other.compress([TEXT_A])[0])
    assert foreign_key != key_for(TEXT_A, compressor.fingerprint)
    digests, hits = store.compress_cached(compressor, [TEXT_A])
    assert hits == [False] and digests[0].fingerprint == compressor.fingerprint
    # A file whose content does not match its name (copied over, tampered) is a miss.
    key_b = key_for(TEXT_B, compressor.fingerprint)
    (tmp_path / f"{key_for(TEXT_A, compressor.fingerprint)}.digest.safetensors").rename(
        tmp_path / f"{key_b}.digest.safetensors"
    )
    fresh = DigestStore(tmp_path)
    assert fresh.get(key_b) is None
    (tmp_path / f"{key_b}.digest.safetensors").write_bytes(b"not a digest")  # a corrupt file: a miss
    assert DigestStore(tmp_path).get(key_b) is None
    digests, hits = DigestStore(tmp_path).compress_cached(compressor, [TEXT_B])
    assert hits == [False] and digests[0].content_hash == compressor.compress([TEXT_B])[0].content_hash
    assert DigestStore(tmp_path).get(key_b) is not None  # the bad file was replaced


def test_store_bad_input(tmp_path, compressor):
    store = DigestStore()
    with pytest.raises(TypeError, match="Digest"):
        store.put("text")
    with pytest.raises(TypeError, match="list of texts"):
        store.compress_cached(compressor, TEXT_A)
    with pytest.raises(ValueError):
        DigestStore(max_cached=0)
    assert store.get("not-a-key") is None and DigestStore(tmp_path).get("../x") is None  # not keys: misses
    disk = DigestStore(tmp_path, max_cached=1)
    keys = [disk.put(d) for d in compressor.compress([TEXT_A, TEXT_B])]
    assert len(disk._cache) == 1 and all(disk.get(k) is not None for k in keys)  # evicted ones reload


def test_concurrent_compress_cached_from_threads(compressor, tmp_path):
    store = DigestStore(tmp_path)
    texts = [f"Document number {i}: {TEXT_A}" for i in range(12)]
    results: dict[int, list[Digest]] = {}

    def work(i: int) -> None:
        mine = [texts[i], texts[(i + 1) % 12], texts[i]]
        results[i] = store.compress_cached(compressor, mine)[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, digests in results.items():
        assert [digest_key(d) for d in digests] == [
            key_for(t, compressor.fingerprint) for t in (texts[i], texts[(i + 1) % 12], texts[i])
        ]
    assert len(store) == 12


# -------------------------------------------------------------------------------- chat with markers
def test_build_chat_inputs_splices_digests_in_place_of_markers(soft_lm, compressor, tokenizer):
    store = DigestStore()
    digests, _ = store.compress_cached(compressor, [TEXT_A, TEXT_B])
    ka, kb = (digest_key(d) for d in digests)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": f"Context:\n{marker_for(ka)}\n{marker_for(kb)}\n\nWho?"},
    ]
    prompt = soft_lm.build_chat_inputs(messages, store)
    assert prompt.digest_keys == [ka, kb]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    before, middle, after = text.split(marker_for(ka))[0], "\n", text.split(marker_for(kb))[1]
    n = lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert prompt.num_positions == n(before) + n(middle) + n(after) + len(digests[0]) + len(digests[1]) + 4
    special = compressor.model.special_embeddings
    slot = prompt.embeds[n(before) : n(before) + len(digests[0]) + 2]
    assert torch.equal(slot[0], special[ICFormer.SPECIAL_BEGIN])
    assert torch.equal(slot[-1], special[ICFormer.SPECIAL_END])
    assert torch.equal(slot[1:-1], digests[0].embeddings)
    # A dict works as the digest source too, and gives the same prompt.
    assert torch.equal(soft_lm.build_chat_inputs(messages, {ka: digests[0], kb: digests[1]}).embeds, prompt.embeds)


def test_chat_without_markers_is_the_plain_chat_prompt(soft_lm, tokenizer, tiny_llm):
    messages = chat("Hello there")
    prompt = soft_lm.build_chat_inputs(messages)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(ids, add_special_tokens=False)["input_ids"]
    assert prompt.digest_keys == [] and torch.equal(prompt.embeds, tiny_llm.get_input_embeddings()(torch.tensor(ids)))


def test_missing_or_foreign_digest_raises_naming_the_marker(soft_lm, tiny_llm, tokenizer, compressor_kwargs):
    missing = marker_for("ab" * 12)
    with pytest.raises(ValueError, match=missing):
        soft_lm.build_chat_inputs(chat(f"read {missing}"), DigestStore())
    with pytest.raises(ValueError, match="no digest store"):
        soft_lm.generate_chat(chat(f"read {missing}"), None, SHORT)
    other = ContextCompressor.from_llm(tiny_llm, tokenizer, seed=7, **compressor_kwargs)
    store = DigestStore()
    key = store.put(other.compress([TEXT_A])[0])
    with pytest.raises(ValueError, match="recompress"):
        soft_lm.build_chat_inputs(chat(marker_for(key)), store)


def test_bad_messages(soft_lm):
    with pytest.raises(TypeError, match="list of"):
        soft_lm.build_chat_inputs("hello")
    with pytest.raises(ValueError, match="empty"):
        soft_lm.build_chat_inputs([])
    with pytest.raises(TypeError, match="message 0"):
        soft_lm.build_chat_inputs([{"role": "user", "content": None}])


def test_generate_chat_batch_equals_one_by_one_and_stream(soft_lm, compressor):
    store = DigestStore()
    digests, _ = store.compress_cached(compressor, [TEXT_A, TEXT_B])
    ka, kb = (digest_key(d) for d in digests)
    convs = [
        chat(f"{marker_for(ka)}\nWho?"),
        chat(f"{marker_for(kb)} {marker_for(ka)}\nWhat is glass made of?"),
        chat("No context at all, just a longer question about glass?"),
    ]
    batched = soft_lm.generate_chat_batch(convs, store, SHORT)
    alone = [soft_lm.generate_chat(c, store, SHORT) for c in convs]
    assert [r.text for r in batched] == [r.text for r in alone]
    assert [r.digest_keys for r in batched] == [[ka], [kb, ka], []]
    for r, c in zip(batched, convs, strict=True):
        assert r.prompt_tokens == soft_lm.build_chat_inputs(c, store).num_positions
        assert 1 <= r.completion_tokens <= SHORT.max_new_tokens and r.finish_reason in ("stop", "length")
    counts: list[int] = []
    chunks = list(soft_lm.stream_prompt(soft_lm.build_chat_inputs(convs[0], store), SHORT, counts))
    assert "".join(chunks).strip() == batched[0].text and counts == [batched[0].completion_tokens]
    assert "".join(soft_lm.stream_chat(convs[1], store, SHORT)).strip() == batched[1].text
    # The marker form gives the same answer as build_inputs' digest form for the same prompt layout.
    assert soft_lm.generate_chat_batch([], store, SHORT) == []


def test_len_counts_each_digest_once_beside_compress_out_links(compressor, tmp_path):
    """`icformer-rag compress --out DIR` links each digest as DIR/<stem>.digest.safetensors beside its key-named
    file: len(DigestStore(DIR)) counted both (2 for one digest)."""
    store = DigestStore(tmp_path)
    key = store.put(compressor.compress(["A short text about glass."])[0])
    os.link(tmp_path / f"{key}.digest.safetensors", tmp_path / "glass.digest.safetensors")
    assert len(DigestStore(tmp_path)) == 1
