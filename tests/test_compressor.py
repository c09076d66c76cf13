"""ContextCompressor on the tiny random Llama: digests, batching, fingerprints, checkpoints, Digest files."""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import icformer_rag.compressor as compressor_module
from icformer_rag import ContextCompressor, Digest
from icformer_rag.windows import split_windows

DOCS = [
    "The town of Velmora was founded in 1723 by Ada Krenn, a glassmaker.",
    "Short.",
    " ".join(f"Sentence number {i} talks about rivers, bridges and the sea." for i in range(12)),  # several windows
    "Glass is made from sand, soda and lime, heated until it melts.",
]


def expected_counts(compressor, text):
    ids = compressor.tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids, [
        math.ceil(len(w) / compressor.config.ratio) for w in split_windows(ids, compressor.config.window_tokens)
    ]


def test_one_digest_per_text_with_the_right_sizes(compressor):
    digests = compressor.compress(DOCS)
    assert len(digests) == len(DOCS)
    assert len(expected_counts(compressor, DOCS[2])[1]) > 2  # the long document really spans windows
    for text, d in zip(DOCS, digests, strict=True):
        ids, counts = expected_counts(compressor, text)
        assert isinstance(d, Digest)
        assert d.num_tokens == len(ids)
        assert d.window_digests == counts
        assert len(d) == sum(counts) == d.embeddings.shape[0]
        assert d.embeddings.shape[1] == compressor.config.hidden_size
        assert d.content_hash == hashlib.sha256(text.encode("utf-8")).hexdigest()
        assert d.fingerprint == compressor.fingerprint
        assert d.compression == pytest.approx(len(ids) / len(d))


def test_digests_on_llm_device_and_dtype(compressor, tiny_llm):
    d = compressor.compress(["hello"])[0]
    weight = tiny_llm.get_input_embeddings().weight
    assert d.embeddings.device == weight.device
    assert d.embeddings.dtype == weight.dtype == torch.float32


def test_compressor_dtype_override(tiny_llm, tokenizer, compressor_kwargs):
    bf16 = ContextCompressor.from_llm(tiny_llm, tokenizer, dtype="bf16", **compressor_kwargs)
    assert bf16.dtype == torch.bfloat16
    assert bf16.compress(["hello world"])[0].embeddings.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        ContextCompressor.from_llm(tiny_llm, tokenizer, dtype="int8", **compressor_kwargs)


def test_batched_equals_one_by_one(compressor, tiny_llm, tokenizer):
    together = compressor.compress(DOCS)
    alone = [compressor.compress([t])[0] for t in DOCS]
    # A budget of one window forces every window into its own batch; 3 windows mixes lengths differently.
    window = compressor.config.window_tokens
    for budget in (window, 3 * window):
        small = ContextCompressor(compressor.model, compressor.embed_tokens, tokenizer, max_batch_tokens=budget)
        assert small.fingerprint == compressor.fingerprint
        for a, b in zip(small.compress(DOCS), alone, strict=True):
            torch.testing.assert_close(a.embeddings, b.embeddings, atol=1e-5, rtol=1e-5)
    for a, b in zip(together, alone, strict=True):
        assert a.window_digests == b.window_digests
        torch.testing.assert_close(a.embeddings, b.embeddings, atol=1e-5, rtol=1e-5)


def test_windows_are_compressed_independently(compressor):
    """A document's digest is the concatenation of its windows' digests, each compressed on its own."""
    text = DOCS[2]
    ids, counts = expected_counts(compressor, text)
    d = compressor.compress([text])[0]
    parts = [compressor.compress_windows([w])[0] for w in split_windows(ids, compressor.config.window_tokens)]
    assert [p.shape[0] for p in parts] == counts
    torch.testing.assert_close(d.embeddings, torch.cat(parts), atol=1e-5, rtol=1e-5)


def test_compress_windows_rejects_bad_windows(compressor):
    assert compressor.compress_windows([]) == []
    with pytest.raises(ValueError, match="tokens"):
        compressor.compress_windows([[1] * (compressor.config.window_tokens + 1)])
    with pytest.raises(ValueError, match="tokens"):
        compressor.compress_windows([[1, 2], []])
    with pytest.raises(ValueError, match="vocabulary"):
        compressor.compress_windows([[1, compressor.embed_tokens.num_embeddings]])


def test_max_batch_tokens_below_a_window_raises(compressor, tokenizer):
    with pytest.raises(ValueError, match="max_batch_tokens"):
        ContextCompressor(compressor.model, compressor.embed_tokens, tokenizer, max_batch_tokens=8)


def test_from_llm_is_seeded_and_leaves_global_rng_alone(tiny_llm, tokenizer, compressor, compressor_kwargs):
    state = torch.random.get_rng_state()
    again = ContextCompressor.from_llm(tiny_llm, tokenizer, **compressor_kwargs)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert again.fingerprint == compressor.fingerprint
    other = ContextCompressor.from_llm(tiny_llm, tokenizer, seed=1, **compressor_kwargs)
    assert other.fingerprint != compressor.fingerprint


def test_fingerprint_follows_weights(tiny_llm, tokenizer, compressor_kwargs):
    c = ContextCompressor.from_llm(tiny_llm, tokenizer, **compressor_kwargs)
    before = c.fingerprint
    assert len(before) == 16 and c.compute_fingerprint() == before
    with torch.no_grad():
        c.model.digest_embeddings[0, 0] += 1.0
    assert c.fingerprint == before  # cached until refreshed (training refreshes)
    assert c.refresh_fingerprint() != before


def test_shipped_checkpoint_recomputes_to_its_stored_fingerprint(default_llm):
    """Config fields added later (the LLM encoder's) must not change an existing IC-Former's identity: digests
    stored under its fingerprint stay valid."""
    llm, tok = default_llm
    c = ContextCompressor.from_pretrained(None, llm, tok, load_reader=False)
    stored = (compressor_module.DEFAULT_CHECKPOINT / "fingerprint.txt").read_text().strip()
    assert c.fingerprint == stored == c.compute_fingerprint()


def test_checkpoint_written_with_the_removed_chunk_queries_loads_to_the_same_fingerprint(
    compressor, tiny_llm, tokenizer, tmp_path
):
    """config.json files written while `chunk_queries` was a field hold `"chunk_queries": false`, and their
    fingerprint was computed over a config holding it: they load, to that same fingerprint (digests cached
    under it stay valid); one with `true` is refused."""
    compressor.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    assert "chunk_queries" not in config
    # The fingerprint as it was computed when the field existed: config (without the LLM encoder's fields, for an
    # IC-Former) with chunk_queries, then the weights as bf16.
    old = {k: v for k, v in {**config, "chunk_queries": False}.items() if k not in ("encoder_rank", "encoder_alpha")}
    old.pop("encoder")
    h = hashlib.sha256(json.dumps(old, sort_keys=True).encode())
    for name, tensor in sorted(compressor.model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to(torch.bfloat16).cpu().contiguous().view(torch.int16).numpy().tobytes())
    assert compressor.fingerprint == h.hexdigest()[:16]
    path.write_text(json.dumps({**config, "chunk_queries": False}))
    loaded = ContextCompressor.from_pretrained(tmp_path, tiny_llm, tokenizer)
    assert loaded.fingerprint == compressor.fingerprint
    path.write_text(json.dumps({**config, "chunk_queries": True}))
    with pytest.raises(ValueError, match="chunk_queries"):
        ContextCompressor.from_pretrained(tmp_path, tiny_llm, tokenizer)


def test_save_and_load_round_trip(compressor, tiny_llm, tokenizer, tmp_path):
    compressor.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors"}
    rng = torch.random.get_rng_state()
    loaded = ContextCompressor.from_pretrained(tmp_path, tiny_llm, tokenizer)
    assert torch.equal(torch.random.get_rng_state(), rng)  # loading never moves the caller's RNG
    assert loaded.config == compressor.config
    original = compressor.model.state_dict()
    state = loaded.model.state_dict()
    assert state.keys() == original.keys()
    for name, tensor in original.items():
        assert torch.equal(state[name], tensor), name
        assert state[name].dtype == tensor.dtype
    assert torch.equal(
        load_file(str(tmp_path / "model.safetensors"))["digest_embeddings"], compressor.model.digest_embeddings
    )
    assert loaded.fingerprint == compressor.fingerprint == loaded.compute_fingerprint()
    for a, b in zip(loaded.compress(DOCS), compressor.compress(DOCS), strict=True):
        assert torch.equal(a.embeddings, b.embeddings)
        assert a.fingerprint == b.fingerprint


def test_load_in_bf16_keeps_fingerprint(compressor, tiny_llm, tokenizer, tmp_path):
    compressor.save_pretrained(tmp_path)
    loaded = ContextCompressor.from_pretrained(tmp_path, tiny_llm, tokenizer, dtype="bfloat16")
    assert loaded.dtype == torch.bfloat16
    assert loaded.fingerprint == compressor.fingerprint == loaded.compute_fingerprint()


def test_checkpoint_for_another_llm_raises(compressor, tokenizer, llm_factory, tmp_path):
    compressor.save_pretrained(tmp_path)
    wider = llm_factory(len(tokenizer), hidden_size=128, name="wide-random-llama")
    with pytest.raises(ValueError, match="tiny-random-llama") as err:
        ContextCompressor.from_pretrained(tmp_path, wider, tokenizer)
    assert "wide-random-llama" in str(err.value) and "hidden" in str(err.value)
    same_shape = llm_factory(len(tokenizer), seed=1, name="other-random-llama")
    with pytest.raises(ValueError, match="tiny-random-llama") as err:
        ContextCompressor.from_pretrained(tmp_path, same_shape, tokenizer)
    assert "other-random-llama" in str(err.value) and "embedding" in str(err.value)


def test_missing_checkpoint_raises(tiny_llm, tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError):
        ContextCompressor.from_pretrained(tmp_path / "nothing-here", tiny_llm, tokenizer)


def test_no_shipped_checkpoint_warns_untrained(tiny_llm, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(compressor_module, "DEFAULT_CHECKPOINT", tmp_path / "not-shipped")
    with pytest.warns(UserWarning, match="UNTRAINED"):
        c = ContextCompressor.from_pretrained(None, tiny_llm, tokenizer)
    assert c.config.hidden_size == 64 and c.config.llm.name == "tiny-random-llama"
    with pytest.raises(FileNotFoundError):
        ContextCompressor.from_pretrained(None, tiny_llm, tokenizer, allow_untrained=False)


def test_digest_save_load_round_trip(compressor, tmp_path):
    d = compressor.compress([DOCS[2]])[0]
    path = d.save(tmp_path / "sub" / "doc.safetensors")
    again = Digest.load(path)
    assert torch.equal(again.embeddings, d.embeddings)
    assert again.embeddings.dtype == d.embeddings.dtype
    assert (again.num_tokens, again.content_hash, again.fingerprint, again.window_digests) == (
        d.num_tokens,
        d.content_hash,
        d.fingerprint,
        d.window_digests,
    )
    bf16 = d.to(dtype=torch.bfloat16)
    assert torch.equal(Digest.load(bf16.save(tmp_path / "bf16.safetensors")).embeddings, bf16.embeddings)


def test_digest_load_rejects_other_files(tmp_path):
    other = tmp_path / "weights.safetensors"
    save_file({"embeddings": torch.zeros(2, 4)}, str(other))
    with pytest.raises(ValueError, match="not an icformer-rag digest"):
        Digest.load(other)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"definitely not safetensors")
    with pytest.raises(ValueError, match="not an icformer-rag digest"):
        Digest.load(garbage)
    with pytest.raises(FileNotFoundError):
        Digest.load(tmp_path / "missing.safetensors")


def test_digest_validates_its_fields():
    with pytest.raises(ValueError, match=r"\(M, C\)"):
        Digest(torch.zeros(4), 4, "h", "f")
    with pytest.raises(ValueError, match="window_digests"):
        Digest(torch.zeros(4, 8), 16, "h", "f", window_digests=[3])


def test_signature_hashes_the_embedding_table_across_dtypes(tiny_llm):
    import copy

    from icformer_rag.compressor import llm_signature

    sig = llm_signature(tiny_llm)
    assert len(sig.embedding_sha256) == 64
    as_bf16 = copy.deepcopy(tiny_llm).to(torch.bfloat16)
    assert llm_signature(as_bf16).embedding_sha256 == llm_signature(as_bf16.float()).embedding_sha256
    other = copy.deepcopy(tiny_llm)
    with torch.no_grad():
        other.get_input_embeddings().weight.add_(0.05)
    assert llm_signature(other).embedding_sha256 != sig.embedding_sha256
    assert sig.mismatch(llm_signature(other)) is not None
    assert sig.mismatch(llm_signature(tiny_llm)) is None


# Inductor compiles C++ on the CPU: without a compiler only the dynamo capture ("eager" backend) can be tested.
HAS_CXX = any(shutil.which(c) for c in ("g++", "c++", "clang++"))


@pytest.mark.parametrize(
    "backend",
    ["eager", pytest.param("inductor", marks=pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler for inductor"))],
)
def test_compiled_compressor_gives_the_eager_digests(compressor, tokenizer, backend):
    # compile() pads every window to full length and batches to a power of two, and always asks for all k
    # digests; the digests must still equal the eager ones. "eager" checks the graph capture and the padding
    # in a second; "inductor" is what users get (a C++ compile on the CPU, CUDA graphs on a GPU).
    eager = compressor.compress(DOCS)
    window = compressor.config.window_tokens
    compiled = ContextCompressor(
        compressor.model, compressor.embed_tokens, tokenizer, max_batch_tokens=3 * window
    ).compile(backend=backend)
    assert compiled.compiled and not compressor.compiled
    assert compiled.fingerprint == compressor.fingerprint
    for _ in range(2):  # the second pass replays what the first compiled
        for a, b in zip(compiled.compress(DOCS), eager, strict=True):
            assert a.window_digests == b.window_digests
            torch.testing.assert_close(a.embeddings, b.embeddings, atol=1e-4, rtol=1e-4)
    # Worker threads (the adapters' async paths) get the same digests from the compiled compressor.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda t: compiled.compress([t])[0], DOCS * 2))
    for a, b in zip(results, eager * 2, strict=True):
        torch.testing.assert_close(a.embeddings, b.embeddings, atol=1e-4, rtol=1e-4)
    # Shapes seen by the compiled function: full windows; 2 windows pad to 2 rows, 1 to 1, and 3 would pad to 4
    # but the budget (3 windows) caps it at 3.
    shapes = []
    inner = compiled._compiled
    compiled._compiled = lambda ids, mask: shapes.append(tuple(ids.shape)) or inner(ids, mask)
    ids = compressor.tokenize([DOCS[2]])[0]
    windows = [ids[i : i + window] for i in range(0, 3 * window, window)]
    for n in (3, 2, 1):
        assert len(compiled.compress_windows(windows[:n])) == n
    assert shapes == [(3, window), (2, window), (1, window)]
