"""Issue 16, items 1, 4 and 5: what is loaded is checked, never trusted.

1. A checkpoint's fingerprint is recomputed from its config (with the LLM signature) and weights on load; a stored
   value that disagrees is an error naming both.
4. Digest files and store entries are checked (floating dtype, shape, finite values, the vectors' sha256) on load
   and on every store read; a bad one is an error, never a hit.
5. Config values are type- and range-checked, the weights are checked against the config before anything is
   allocated, and a blanked LLM signature loads against no LLM.

Each docstring holds the repro that passed silently (or crashed inside torch) before the fix.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import icformer_rag.compressor as compressor_module
from icformer_rag import ContextCompressor, Digest, ICFormer, ICFormerConfig, LLMSignature
from icformer_rag.compressor import fingerprint_of, llm_signature
from icformer_rag.digest import DIGEST_FORMAT, InvalidDigestError, content_hash, vectors_sha256
from icformer_rag.store import DigestStore, digest_key, key_for

TEXT = "The town of Velmora was founded in 1723 by Ada Krenn, a glassmaker."
OTHER_TEXT = "Glass is made from sand, soda and lime. " * 6


# ------------------------------------------------------------------------------------------------ helpers
def saved_checkpoint(compressor: ContextCompressor, folder: Path) -> Path:
    return compressor.save_pretrained(folder)


def edit_config(folder: Path, **changes) -> None:
    data = json.loads((folder / "config.json").read_text())
    data.update(changes)
    (folder / "config.json").write_text(json.dumps(data))


def rewrite_weights(folder: Path, change, keep_metadata: bool = True) -> None:
    """Apply `change` to the weights dict and write it back, keeping (or dropping) the file's metadata."""
    file = folder / "model.safetensors"
    with safe_open(str(file), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(file))
    change(state)
    save_file(state, str(file), metadata=meta if keep_metadata else None)


def write_digest_file(path: Path, vectors: torch.Tensor, **meta_changes) -> Path:
    """A digest file as any writer (an older version, another tool, an attacker) could make it, bypassing the
    checks of Digest.save. `meta_changes` values of None drop the field."""
    meta = {
        "format": DIGEST_FORMAT,
        "num_tokens": str(4 * vectors.shape[0]),
        "content_hash": content_hash(TEXT),
        "fingerprint": "0123456789abcdef",
        "window_digests": json.dumps([vectors.shape[0]]),
    }
    meta.update(meta_changes)
    save_file(
        {"embeddings": vectors.contiguous()}, str(path), metadata={k: v for k, v in meta.items() if v is not None}
    )
    return path


def flip_a_data_byte(path: Path, offset_from_end: int = 6) -> None:
    """One flipped low mantissa bit in the last vectors: still a finite, plausible number."""
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def no_build(*args, **kwargs):
    raise AssertionError("the model was built (memory allocated) before the weights were checked")


# ----------------------------------------------------------------------------------- 1. stale fingerprints
def test_changed_weights_with_kept_fingerprint_file_is_an_error_naming_both(compressor, tiny_llm, tokenizer, tmp_path):
    """Repro: save a checkpoint, change a weight, keep fingerprint.txt (and the weights' metadata):
    `ContextCompressor.from_pretrained(path, llm, tok).fingerprint` was the old value, so the changed compressor got
    the original one's digests from a shared store as hits."""
    path = saved_checkpoint(compressor, tmp_path / "ckpt")
    stored = (path / "fingerprint.txt").read_text().strip()
    rewrite_weights(path, lambda s: s["digest_embeddings"].add_(0.5))
    actual = fingerprint_of(ICFormerConfig.load(path), load_file(str(path / "model.safetensors")))
    assert actual != stored
    with pytest.raises(ValueError, match="fingerprint") as err:
        ContextCompressor.from_pretrained(path, tiny_llm, tokenizer)
    assert stored in str(err.value) and actual in str(err.value)


def test_changed_config_with_kept_fingerprint_file_is_an_error(compressor, tiny_llm, tokenizer, tmp_path):
    """Repro: edit config.json (rope_theta 10000 -> 20000) and keep fingerprint.txt: it loaded under the old
    fingerprint, though the same weights now make other digests."""
    path = saved_checkpoint(compressor, tmp_path / "ckpt")
    edit_config(path, rope_theta=20000.0)
    with pytest.raises(ValueError, match=compressor.fingerprint):
        ContextCompressor.from_pretrained(path, tiny_llm, tokenizer)


def test_a_forged_fingerprint_file_is_an_error(compressor, tiny_llm, tokenizer, tmp_path):
    """Repro: write another compressor's fingerprint into fingerprint.txt (weights unchanged): the checkpoint
    loaded under it and read and wrote that compressor's digests in a shared store."""
    path = saved_checkpoint(compressor, tmp_path / "ckpt")
    (path / "fingerprint.txt").write_text("deadbeefdeadbeef\n")
    with pytest.raises(ValueError, match="deadbeefdeadbeef") as err:
        ContextCompressor.from_pretrained(path, tiny_llm, tokenizer)
    assert compressor.fingerprint in str(err.value)
    # The weights file's metadata is checked too.
    path2 = saved_checkpoint(compressor, tmp_path / "ckpt2")
    (path2 / "fingerprint.txt").unlink()
    rewrite_weights(path2, lambda s: None, keep_metadata=False)
    save_file(load_file(str(path2 / "model.safetensors")), str(path2 / "model.safetensors"), {"fingerprint": "f" * 16})
    with pytest.raises(ValueError, match="f" * 16):
        ContextCompressor.from_pretrained(path2, tiny_llm, tokenizer)


def test_a_changed_checkpoint_gets_no_hits_from_the_original_ones_store(compressor, tiny_llm, tokenizer, tmp_path):
    """Repro (the security case): a shared store holds the shipped/original compressor's digests; a checkpoint whose
    weights changed but kept fingerprint.txt got them as cache hits (`hits == [True]`). Now the stale fingerprint
    is refused, and without any stored fingerprint the changed checkpoint gets its own, so nothing is shared."""
    store = DigestStore(tmp_path / "shared")
    _, hits = store.compress_cached(compressor, [TEXT])
    assert hits == [False]
    path = saved_checkpoint(compressor, tmp_path / "ckpt")
    rewrite_weights(path, lambda s: s["digest_embeddings"].mul_(-1.0))
    with pytest.raises(ValueError, match="fingerprint"):
        ContextCompressor.from_pretrained(path, tiny_llm, tokenizer)
    (path / "fingerprint.txt").unlink()
    rewrite_weights(path, lambda s: None, keep_metadata=False)
    changed = ContextCompressor.from_pretrained(path, tiny_llm, tokenizer)
    assert changed.fingerprint != compressor.fingerprint
    assert changed.fingerprint == changed.compute_fingerprint()
    digests, hits = store.compress_cached(changed, [TEXT])
    assert hits == [False] and digests[0].fingerprint == changed.fingerprint


def test_save_pretrained_writes_the_fingerprint_of_what_it_writes(tiny_llm, tokenizer, compressor_kwargs, tmp_path):
    """Repro: change the weights without refresh_fingerprint() and save: fingerprint.txt held the stale value, so
    (now that loading recomputes it) the checkpoint would refuse to load."""
    c = ContextCompressor.from_llm(tiny_llm, tokenizer, seed=3, **compressor_kwargs)
    with torch.no_grad():
        c.model.digest_embeddings.add_(1.0)
    path = c.save_pretrained(tmp_path / "ckpt")
    loaded = ContextCompressor.from_pretrained(path, tiny_llm, tokenizer)
    assert loaded.fingerprint == (path / "fingerprint.txt").read_text().strip() == c.compute_fingerprint()


# ------------------------------------------------------------------------------------ 4. digest contents
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_digest_file_with_non_finite_values_is_refused(tmp_path, bad):
    """Repro: `save_file({"embeddings": v}, f, metadata=...)` with one NaN (or inf) in v, then `Digest.load(f)`:
    it loaded and the LLM answered nothing or garbage, exit 0."""
    vectors = torch.randn(3, 64)
    vectors[1, 7] = bad
    path = write_digest_file(tmp_path / "d.safetensors", vectors)
    with pytest.raises(InvalidDigestError, match="NaN or infinite"):
        Digest.load(path)


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.int8, torch.uint8])
def test_a_digest_file_of_integer_or_boolean_vectors_is_refused(tmp_path, dtype):
    """Repro: a digest file whose `embeddings` are bool or int tensors loaded, and were cast into 0/1 "embeddings"."""
    path = write_digest_file(tmp_path / "d.safetensors", torch.ones(3, 64).to(dtype))
    with pytest.raises(InvalidDigestError, match="floating"):
        Digest.load(path)
    with pytest.raises(ValueError, match="floating"):
        Digest(torch.ones(3, 64).to(dtype), 12, "h", "f")


def test_a_bit_flipped_digest_file_is_refused(compressor, tmp_path):
    """Repro: save a digest, flip one bit of its vectors' bytes, `Digest.load`: it loaded a slightly different
    (finite, plausible) digest silently."""
    d = compressor.compress([OTHER_TEXT])[0]
    path = d.save(tmp_path / "d.safetensors")
    assert torch.equal(Digest.load(path).embeddings, d.embeddings)
    flip_a_data_byte(path)
    changed = load_file(str(path))["embeddings"]
    assert torch.isfinite(changed).all() and not torch.equal(changed, d.embeddings)  # only the checksum can tell
    with pytest.raises(InvalidDigestError, match="sha256"):
        Digest.load(path)


def test_a_digest_whose_shape_contradicts_its_metadata_is_refused(tmp_path):
    """Repro: vectors (3, 64) recorded as shape [3, 32], or 5 vectors for 2 source tokens: loaded silently."""
    vectors = torch.randn(3, 64)
    with pytest.raises(InvalidDigestError, match="recorded"):
        Digest.load(write_digest_file(tmp_path / "a.safetensors", vectors, shape="[3, 32]"))
    with pytest.raises(InvalidDigestError, match="source tokens"):
        Digest.load(write_digest_file(tmp_path / "b.safetensors", vectors, num_tokens="2"))
    with pytest.raises(InvalidDigestError, match="window_digests"):
        Digest.load(write_digest_file(tmp_path / "c.safetensors", vectors, window_digests="[2]"))


def test_a_digest_file_with_missing_or_malformed_metadata_is_a_clear_error(tmp_path):
    """Repro: a digest file without `num_tokens` raised KeyError('num_tokens') from inside Digest.load."""
    vectors = torch.randn(3, 64)
    with pytest.raises(InvalidDigestError, match="num_tokens"):
        Digest.load(write_digest_file(tmp_path / "a.safetensors", vectors, num_tokens=None))
    with pytest.raises(InvalidDigestError, match="window_digests"):
        Digest.load(write_digest_file(tmp_path / "b.safetensors", vectors, window_digests="[1, "))
    with pytest.raises(InvalidDigestError, match="fingerprint"):
        Digest.load(write_digest_file(tmp_path / "c.safetensors", vectors, fingerprint=None))


def test_digests_saved_before_the_checksum_still_load(compressor, tmp_path):
    """Files written before `embeddings_sha256` and `shape` existed load as before; the other checks apply."""
    d = compressor.compress([TEXT])[0]
    path = write_digest_file(
        tmp_path / "old.safetensors",
        d.embeddings,
        num_tokens=str(d.num_tokens),
        window_digests=json.dumps(d.window_digests),
        fingerprint=d.fingerprint,
    )
    again = Digest.load(path)
    assert torch.equal(again.embeddings, d.embeddings) and again.window_digests == d.window_digests
    nan = d.embeddings.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(InvalidDigestError, match="NaN"):
        Digest.load(write_digest_file(tmp_path / "old-nan.safetensors", nan, num_tokens=str(d.num_tokens)))


def test_save_records_the_checksum_and_refuses_a_bad_digest(compressor, tmp_path):
    """Repro: `Digest(nan_vectors, ...).save(f)` wrote a file that would only give garbage when read."""
    d = compressor.compress([TEXT])[0]
    path = d.save(tmp_path / "d.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["embeddings_sha256"] == vectors_sha256(d.embeddings)
    assert json.loads(meta["shape"]) == list(d.embeddings.shape)
    bad = Digest(torch.full((2, 64), float("nan")), 8, "h", "f")
    with pytest.raises(InvalidDigestError, match="NaN"):
        bad.save(tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()
    bf16 = d.to(dtype=torch.bfloat16)  # the checksum is over the bytes as stored, whatever the dtype
    assert torch.equal(Digest.load(bf16.save(tmp_path / "bf16.safetensors")).embeddings, bf16.embeddings)


def test_a_damaged_store_file_is_an_error_never_a_hit(compressor, tmp_path):
    """Repro: `DigestStore(dir).compress_cached(c, [text])` after one bit of the stored file flipped returned the
    changed digest with `hits == [True]`."""
    DigestStore(tmp_path).compress_cached(compressor, [OTHER_TEXT])
    key = key_for(OTHER_TEXT, compressor.fingerprint)
    path = tmp_path / f"{key}.digest.safetensors"
    flip_a_data_byte(path)
    fresh = DigestStore(tmp_path)
    with pytest.raises(InvalidDigestError, match=key) as err:
        fresh.get(key)
    assert str(path) in str(err.value) and "sha256" in str(err.value)
    with pytest.raises(InvalidDigestError, match=key):
        fresh.compress_cached(compressor, [OTHER_TEXT])
    path.unlink()  # the remedy the message names: the digest is recomputed
    digests, hits = fresh.compress_cached(compressor, [OTHER_TEXT])
    assert hits == [False] and torch.isfinite(digests[0].embeddings).all()


@pytest.mark.parametrize("kind", ["nan", "int"])
def test_a_nan_or_integer_file_under_the_right_key_is_an_error(compressor, tmp_path, kind):
    """Repro: a file under the right key (right text hash and fingerprint) holding NaN or int64 vectors was
    returned by `store.get(key)` and served to the LLM."""
    good = compressor.compress([TEXT])[0]
    vectors = good.embeddings.clone()
    if kind == "nan":
        vectors[0] = float("nan")
    else:
        vectors = vectors.long()
    key = digest_key(good)
    write_digest_file(
        tmp_path / f"{key}.digest.safetensors",
        vectors,
        num_tokens=str(good.num_tokens),
        window_digests=json.dumps(good.window_digests),
        fingerprint=good.fingerprint,
    )
    with pytest.raises(InvalidDigestError, match=key):
        DigestStore(tmp_path).get(key)
    with pytest.raises(InvalidDigestError):
        DigestStore(tmp_path).compress_cached(compressor, [TEXT])


def test_the_store_refuses_bad_digests_and_checks_memory_entries(compressor):
    """Repro: `store.put(Digest(nan_vectors, ...))` was accepted and `store.get(key)` returned it; a cached digest
    changed in place (`d.embeddings[0, 0] = nan`) was served from memory."""
    store = DigestStore()
    bad = Digest(torch.full((2, 64), float("nan")), 8, content_hash(TEXT), compressor.fingerprint)
    with pytest.raises(InvalidDigestError, match="NaN"):
        store.put(bad)
    assert len(store) == 0
    d = compressor.compress([OTHER_TEXT])[0]
    d = Digest(d.embeddings.clone(), d.num_tokens, d.content_hash, d.fingerprint, list(d.window_digests))
    key = store.put(d)
    assert store.get(key) is d
    d.embeddings[0, 0] = float("inf")
    with pytest.raises(InvalidDigestError, match=key):
        store.get(key)
    assert store.get(key) is None  # not kept: a memory-only store now simply lacks it


def test_a_stored_digest_of_the_wrong_shape_for_the_compressor_is_never_a_hit(compressor, tmp_path):
    """Repro: a digest file under the right key with consistent metadata and checksum but vectors 32 wide (or one
    vector for a text the compressor gives many) came back from compress_cached with `hits == [True]`."""
    good = compressor.compress([OTHER_TEXT])[0]
    key = digest_key(good)
    path = tmp_path / f"{key}.digest.safetensors"
    for vectors, num_tokens in ((torch.randn(len(good), 32), good.num_tokens), (torch.randn(1, 64), good.num_tokens)):
        Digest(vectors, num_tokens, good.content_hash, good.fingerprint).save(path)
        with pytest.raises(InvalidDigestError, match=key):
            DigestStore(tmp_path).compress_cached(compressor, [OTHER_TEXT])


# ------------------------------------------------------------------------------------------ 5. config values
BAD_CONFIG_VALUES = [
    ("rope_theta", "abc"),
    ("rope_theta", float("nan")),
    ("rope_theta", -1.0),
    ("rms_norm_eps", "1e-5"),
    ("rms_norm_eps", 0.0),
    ("local_heads", True),
    ("context_layers", True),
    ("num_special_tokens", "3"),
    ("intermediate_size", 10**9),
    ("hidden_size", 1 << 20),
    ("num_blocks", 10**6),
    ("window_tokens", 1 << 30),
    ("encoder_rank", 10**7),
    ("llm", {"name": "x", "bogus": 1}),
    ("llm", "some-llm"),
]


@pytest.mark.parametrize("name, value", BAD_CONFIG_VALUES, ids=[f"{n}={v!r}"[:40] for n, v in BAD_CONFIG_VALUES])
def test_config_values_are_type_and_range_checked(compressor_kwargs, name, value):
    """Repro: `ICFormerConfig(hidden_size=64, num_heads=4, ..., rope_theta="abc")` (or `local_heads=True`,
    `intermediate_size=10**9`, ...) was accepted, and failed inside torch later (a TypeError in RoPE, a 2.3 TB
    allocation), or silently meant something else (`true` = one local head)."""
    values = dict(hidden_size=64, num_heads=4, **compressor_kwargs)
    values[name] = value
    with pytest.raises(ValueError, match=f"(?i){name}"):  # (?i): "LLMSignature" names the llm field
        ICFormerConfig(**values)


@pytest.mark.parametrize(
    "name, value",
    [("num_blocks", True), ("intermediate_size", 1e9), ("encoder", ["icformer"]), ("digest_positions", None)],
)
def test_config_values_rejected_before_stay_rejected(compressor_kwargs, name, value):
    """Regression guard, not a new case: these were already refused before issue 16 (float and bool sizes, non-string
    choices), and must stay refused by the new checks."""
    values = dict(hidden_size=64, num_heads=4, **compressor_kwargs)
    values[name] = value
    with pytest.raises(ValueError, match=name):
        ICFormerConfig(**values)


def test_a_product_of_sane_sizes_that_is_absurd_is_refused():
    """Repro: hidden 65536, MLP 262144, 128 blocks: each size in range, together 6.6e12 parameters."""
    with pytest.raises(ValueError, match="parameters"):
        ICFormerConfig(hidden_size=1 << 16, num_heads=512, intermediate_size=1 << 18, num_blocks=128)


@pytest.mark.parametrize(
    "overrides",
    [{}, dict(local_heads=2), dict(context_layers=2), dict(digest_positions="after")],
)
def test_estimated_parameters_is_exact_for_the_icformer(compressor_kwargs, overrides):
    cfg = ICFormerConfig(hidden_size=64, num_heads=4, **{**compressor_kwargs, **overrides})
    assert cfg.estimated_parameters() == ICFormer(cfg).num_parameters()


def test_a_config_of_a_checkpoint_with_a_bad_value_is_refused_before_allocating(
    compressor, tiny_llm, tokenizer, tmp_path, monkeypatch
):
    """Repro: config.json `"intermediate_size": 1000000000` made from_pretrained try to allocate the MLPs (TBs);
    `"rope_theta": "abc"` loaded and crashed in compress()."""
    path = saved_checkpoint(compressor, tmp_path / "ckpt")
    monkeypatch.setattr(compressor_module, "build_model", no_build)
    for change in (dict(intermediate_size=10**9), dict(rope_theta="abc"), dict(local_heads=True)):
        saved_checkpoint(compressor, path)
        edit_config(path, **change)
        with pytest.raises(ValueError, match=next(iter(change))):
            ContextCompressor.from_pretrained(path, tiny_llm, tokenizer)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(num_blocks=3), r"missing \d+ tensors \(blocks\.2\."),  # 3 blocks in config.json, 2 of weights
        (dict(num_blocks=1), r"unexpected \d+ tensors \(blocks\.1\."),
        (dict(intermediate_size=256), r"blocks\.0\.mlp\.\w+_proj\.weight is \[\d+, \d+\], the config gives"),
        (dict(local_heads=2), "missing 1 tensors \\(log_slopes"),
    ],
)
def test_weights_that_do_not_fit_the_config_are_refused_before_allocating(
    compressor, tiny_llm, tokenizer, tmp_path, monkeypatch, change, match
):
    """Repro: config.json `"num_blocks": 5` beside 3 blocks of weights built the model, then load_state_dict raised
    a RuntimeError from inside torch (missing keys / size mismatch)."""
    path = saved_checkpoint(compressor, tmp_path / "ckpt")
    edit_config(path, **change)
    monkeypatch.setattr(compressor_module, "build_model", no_build)
    with pytest.raises(ValueError, match=match):
        ContextCompressor.from_pretrained(path, tiny_llm, tokenizer)


def test_integer_weights_are_refused(compressor, tiny_llm, tokenizer, tmp_path, monkeypatch):
    """Repro: a weights file whose `digest_embeddings` is int64 loaded, cast silently to float by load_state_dict."""
    path = saved_checkpoint(compressor, tmp_path / "ckpt")
    rewrite_weights(path, lambda s: s.update(digest_embeddings=s["digest_embeddings"].long()))
    monkeypatch.setattr(compressor_module, "build_model", no_build)
    with pytest.raises(ValueError, match="floating"):
        ContextCompressor.from_pretrained(path, tiny_llm, tokenizer)


def test_a_blanked_llm_signature_loads_against_no_llm(compressor, tiny_llm, tokenizer, llm_factory, tmp_path):
    """Repro: blank `embedding_sha256` and `embedding_probe` in a checkpoint's config.json (name and sizes kept):
    from_pretrained loaded it against any LLM of the same width and vocabulary, whose embeddings its digests do
    not fit."""
    path = saved_checkpoint(compressor, tmp_path / "ckpt")
    llm = json.loads((path / "config.json").read_text())["llm"]
    edit_config(path, llm={**llm, "embedding_sha256": "", "embedding_probe": []})
    (path / "fingerprint.txt").unlink()  # not what this test is about
    rewrite_weights(path, lambda s: None, keep_metadata=False)
    same_shape = llm_factory(len(tokenizer), seed=1, name="other-random-llama")
    for target in (same_shape, tiny_llm):  # with nothing recorded, not even its own LLM can be shown to match
        with pytest.raises(ValueError, match="no embedding hash or probe"):
            ContextCompressor.from_pretrained(path, target, tokenizer)


def test_a_signature_with_only_a_hash_does_not_match_another_llm(tiny_llm, tokenizer, llm_factory):
    """Repro: a signature with a (valid) sha256 but no probe matched every LLM of the same shape, because a
    differing hash fell through to "no probe to compare: match"."""
    mine = llm_signature(tiny_llm)
    hash_only = LLMSignature(mine.name, mine.hidden_size, mine.vocab_size, mine.embedding_sha256, [])
    assert hash_only.mismatch(llm_signature(tiny_llm)) is None
    other = llm_signature(llm_factory(len(tokenizer), seed=1, name="other-random-llama"))
    assert hash_only.mismatch(other) is not None
    assert mine.mismatch(other) is not None


@pytest.mark.parametrize(
    "fields",
    [
        dict(embedding_probe=[float("nan")] * 8),
        dict(embedding_probe=["0.1"]),
        dict(hidden_size="64"),
        dict(vocab_size=True),
        dict(name=None),
    ],
)
def test_llm_signature_values_are_checked(fields):
    """Repro: `embedding_probe: [NaN, ...]` compared as close to every value (`abs(a - b) > tol` is False for
    NaN), so a probe of NaNs matched any LLM of the same shape; string sizes compared unequal with confusing
    messages."""
    with pytest.raises(ValueError, match="LLMSignature"):
        LLMSignature(**{**dict(name="x", hidden_size=64, vocab_size=100), **fields})


def test_a_signature_whose_width_differs_from_the_config_is_refused(compressor_kwargs):
    """Repro: `ICFormerConfig(hidden_size=64, llm=LLMSignature("x", 128, ...))` was accepted."""
    with pytest.raises(ValueError, match="hidden size"):
        ICFormerConfig(hidden_size=64, num_heads=4, llm=LLMSignature("x", 128, 100), **compressor_kwargs)


def test_good_checkpoints_still_load_and_round_trip(compressor, tiny_llm, tokenizer, tmp_path):
    """The checks pass on what save_pretrained writes, in fp32 and bf16, and the fingerprint stays the same."""
    for dtype in (None, torch.bfloat16):
        path = compressor.save_pretrained(tmp_path / str(dtype), dtype=dtype)
        loaded = ContextCompressor.from_pretrained(path, tiny_llm, tokenizer)
        assert loaded.fingerprint == compressor.fingerprint
    assert math.isfinite(ICFormerConfig.load(path).rope_theta)
