"""KVDigestStore over the real ecosystem stores (issue 17): LangChain's InMemoryByteStore and LocalFileStore,
LlamaIndex's SimpleKVStore (persisted and reloaded) and a StorageContext holding digests beside its documents.
Round trips per storage dtype, the same misses as DigestStore, other compressors' digests and damaged values never
served, and the store used where a DigestStore is (compress_cached, chat prompts with markers)."""

from __future__ import annotations

import base64
import hashlib

import pytest
import torch

# The ecosystem stores come with the adapters' and the RAG extras, not with the runtime: the runtime's tests alone
# (a venv with only `icformer-rag[default-llm,dev]`) skip this file.
pytest.importorskip("langchain_classic.storage")
pytest.importorskip("llama_index.core")
from langchain_classic.storage import LocalFileStore  # noqa: E402
from langchain_core.stores import InMemoryByteStore, InMemoryStore  # noqa: E402
from llama_index.core import Document, StorageContext  # noqa: E402
from llama_index.core.storage.docstore import SimpleDocumentStore  # noqa: E402
from llama_index.core.storage.kvstore import SimpleKVStore  # noqa: E402

from icformer_rag import BaseDigestStore, ContextCompressor, DigestStore, KVDigestStore, PackedDigestStore, quantize
from icformer_rag.digest import Digest, InvalidDigestError
from icformer_rag.kv_store import DEFAULT_NAMESPACE
from icformer_rag.store import digest_key, key_for, marker_for

TEXT_A = "The town of Velmora was founded in 1723 by Ada Krenn, a glassmaker."
TEXT_B = "Glass is made from sand, soda and lime. " * 6
KINDS = ["memory", "files", "simple_kv"]


def tiny(i: int, rows: int = 4, width: int = 8, dtype: torch.dtype = torch.bfloat16) -> Digest:
    g = torch.Generator().manual_seed(i)
    e = (torch.randn(rows, width, generator=g) * (1 + i % 3)).to(dtype)
    h = hashlib.sha256(f"text {i}".encode()).hexdigest()
    return Digest(e, num_tokens=4 * rows, content_hash=h, fingerprint="test-fp", window_digests=[rows])


def make_kv(kind: str, tmp_path):
    if kind == "memory":
        return InMemoryByteStore()
    if kind == "files":
        return LocalFileStore(tmp_path / "lc")
    return SimpleKVStore()


def reopen(kind: str, kv, tmp_path):
    """The same data through a new store object: a new LocalFileStore on the folder, a SimpleKVStore persisted to
    disk and loaded back; the in-memory store is the same object (nothing else could hold its data)."""
    if kind == "files":
        return LocalFileStore(tmp_path / "lc")
    if kind == "simple_kv":
        kv.persist(str(tmp_path / "kv.json"))
        return SimpleKVStore.from_persist_path(str(tmp_path / "kv.json"))
    return kv


def raw_value(store: KVDigestStore, key: str):
    if isinstance(store.kv, SimpleKVStore):
        return store.kv.get(key, collection=store.namespace)
    return store.kv.mget([f"{store.namespace}/{key}"])[0]


def set_raw(store: KVDigestStore, key: str, value) -> None:
    if isinstance(store.kv, SimpleKVStore):
        store.kv.put(key, value, collection=store.namespace)
    else:
        store.kv.mset([(f"{store.namespace}/{key}", value)])


# ----------------------------------------------------------------------------------------------- interface
@pytest.mark.parametrize("codec", quantize.CODECS)
@pytest.mark.parametrize("kind", KINDS)
def test_roundtrip_is_bit_identical_per_dtype(tmp_path, kind, codec):
    kv = make_kv(kind, tmp_path)
    store = KVDigestStore(kv, dtype=codec)
    digests = [tiny(i) for i in range(5)] + [tiny(9, dtype=torch.float32)]
    keys = [store.put(digests[0]), *store.put_many(digests[1:])]
    assert keys == [digest_key(d) for d in digests] and len(store) == 6 and all(k in store for k in keys)
    assert sorted(store.keys()) == sorted(keys) == list(store)
    fresh = KVDigestStore(reopen(kind, kv, tmp_path), dtype=codec, max_cached=1)  # no cache: read from the kv store
    packed = PackedDigestStore(tmp_path / "packed", dtype=codec)  # the same records, the same vectors back
    packed.put_many(digests)
    for d, got, ref in zip(digests, fresh.get_many(keys), packed.get_many(keys), strict=True):
        assert got.embeddings.dtype == d.embeddings.dtype
        assert torch.equal(got.embeddings, quantize.decode(quantize.encode(d.embeddings, codec), d.embeddings.dtype))
        assert torch.equal(got.embeddings, ref.embeddings)
        assert (got.num_tokens, got.content_hash, got.fingerprint, got.window_digests) == (
            d.num_tokens,
            d.content_hash,
            d.fingerprint,
            d.window_digests,
        )
    if codec == "bf16":
        assert torch.equal(fresh.get(keys[0]).embeddings, digests[0].embeddings)  # lossless: the very bits
    assert fresh.delete([keys[0], "0" * 24]) == 1 and keys[0] not in fresh and len(fresh) == 5
    packed.close()


@pytest.mark.parametrize("kind", KINDS)
def test_misses_as_digest_store(tmp_path, kind):
    store, folder = KVDigestStore(make_kv(kind, tmp_path)), DigestStore(tmp_path / "folder")
    store.put(tiny(1))
    for s in (store, folder):
        assert s.get("0" * 24) is None and "0" * 24 not in s and s.get_many(["f" * 24]) == [None]
        for bad in ("../../etc/passwd", "ABC", 42, None):
            assert s.get(bad) is None and bad not in s
    assert store.delete("0" * 24) == 0


def test_namespaces_keep_digests_apart_from_other_values(tmp_path):
    kv = InMemoryByteStore()
    kv.mset([("other/abc", b"not ours"), ("a" * 24, b"nor this")])
    ours, theirs = KVDigestStore(kv), KVDigestStore(kv, namespace="team-b")
    key = ours.put(tiny(1))
    assert kv.mget([f"{DEFAULT_NAMESPACE}/{key}"])[0] is not None
    assert list(ours.keys()) == [key] and len(theirs) == 0 and theirs.get(key) is None
    files = LocalFileStore(tmp_path / "lc")  # LocalFileStore: the namespace is a subfolder
    KVDigestStore(files).put(tiny(2))
    assert (tmp_path / "lc" / DEFAULT_NAMESPACE / digest_key(tiny(2))).is_file()


def test_bad_arguments():
    for not_a_store in (object(), {}, DigestStore(), "redis://localhost"):
        with pytest.raises(TypeError, match="LangChain ByteStore .* or a LlamaIndex BaseKVStore"):
            KVDigestStore(not_a_store)
    for bad in ("", "digests/", None):
        with pytest.raises(ValueError, match="namespace"):
            KVDigestStore(InMemoryByteStore(), namespace=bad)
    with pytest.raises(ValueError, match="unknown digest storage dtype"):
        KVDigestStore(InMemoryByteStore(), dtype="int4")
    with pytest.raises(ValueError, match="max_cached"):
        KVDigestStore(InMemoryByteStore(), max_cached=0)
    with pytest.raises(PermissionError, match="readonly"):
        KVDigestStore(InMemoryByteStore(), readonly=True).put(tiny(1))
    with pytest.raises(TypeError, match="takes a Digest"):
        KVDigestStore(InMemoryByteStore()).put(torch.zeros(2, 2))


# ------------------------------------------------------------------------------------- never served wrongly
@pytest.mark.parametrize("kind", KINDS)
def test_other_compressors_digest_is_never_served(tmp_path, kind, compressor, tiny_llm, tokenizer, compressor_kwargs):
    other = ContextCompressor.from_llm(tiny_llm, tokenizer, seed=7, **compressor_kwargs)
    assert other.fingerprint != compressor.fingerprint
    store = KVDigestStore(make_kv(kind, tmp_path))
    theirs = store.put(other.compress([TEXT_A])[0])
    mine = key_for(TEXT_A, compressor.fingerprint)
    assert store.get(mine) is None  # another fingerprint, another key
    set_raw(store, mine, raw_value(store, theirs))  # their sound record under my key: a miss, not a hit
    store._cache.clear()
    assert store.get(mine) is None
    digests, hits = store.compress_cached(compressor, [TEXT_A])  # so it is recompressed with this compressor
    assert hits == [False] and digests[0].fingerprint == compressor.fingerprint and digest_key(digests[0]) == mine


@pytest.mark.parametrize("kind", KINDS)
def test_torn_or_corrupt_values_are_never_served(tmp_path, kind):
    store = KVDigestStore(make_kv(kind, tmp_path), max_cached=1)
    keys = store.put_many([tiny(i, rows=8) for i in range(4)])
    good = raw_value(store, keys[0])
    record = base64.b64decode(good["record"]) if isinstance(good, dict) else good
    flipped = bytearray(record)
    flipped[-3] ^= 0x10
    damaged = {keys[0]: record[: len(record) // 2], keys[1]: bytes(flipped), keys[2]: b"\x00" * 40}
    for key, rec in damaged.items():
        set_raw(
            store,
            key,
            {"format": good["format"], "record": base64.b64encode(rec).decode()} if kind == "simple_kv" else rec,
        )
    store._cache.clear()
    for key in damaged:
        with pytest.raises(InvalidDigestError, match=f"stored digest {key} is damaged"):
            store.get(key)
        with pytest.raises(InvalidDigestError, match=key):
            store.get_many([keys[3], key])
    assert store.get(keys[3]) is not None
    assert store.verify() == {"ok": 1, "damaged": sorted(damaged)}
    store.put(tiny(0, rows=8))  # putting it again repairs it
    assert torch.equal(store.get(keys[0]).embeddings, tiny(0, rows=8).embeddings)


def test_values_that_are_not_records_name_the_key():
    kv = InMemoryStore()  # holds any value: a str under a digest key is not a record
    store = KVDigestStore(kv)
    key = digest_key(tiny(1))
    kv.mset([(f"{DEFAULT_NAMESPACE}/{key}", "a string")])
    with pytest.raises(InvalidDigestError, match=f"{key} .*not a digest record .*a str, not bytes"):
        store.get(key)
    simple = SimpleKVStore()
    store = KVDigestStore(simple)
    for value in ({"text": "a document"}, {"format": "icformer-rag.digest-record.v1", "record": "not base64!"}):
        simple.put(key, value, collection=DEFAULT_NAMESPACE)
        with pytest.raises(InvalidDigestError, match=f"{key} .*not a digest record"):
            store.get(key)


def test_a_torn_file_of_local_file_store(tmp_path):
    store = KVDigestStore(LocalFileStore(tmp_path / "lc"))
    key = store.put(tiny(1, rows=16))
    path = tmp_path / "lc" / DEFAULT_NAMESPACE / key
    path.write_bytes(path.read_bytes()[:100])  # what a crash mid-write leaves
    with pytest.raises(InvalidDigestError, match="torn"):
        KVDigestStore(LocalFileStore(tmp_path / "lc")).get(key)


# -------------------------------------------------------------------------------------------- ecosystems
def test_storage_context_holds_digests_beside_documents(tmp_path, compressor):
    kv = SimpleKVStore()
    storage = StorageContext.from_defaults(docstore=SimpleDocumentStore(simple_kvstore=kv))
    docs = [Document(text=TEXT_A, id_="a"), Document(text=TEXT_B, id_="b")]
    storage.docstore.add_documents(docs)
    store = KVDigestStore(kv, dtype="int8")
    digests, _ = store.compress_cached(compressor, [d.text for d in docs])
    storage.persist(persist_dir=str(tmp_path / "storage"))

    kv2 = SimpleKVStore.from_persist_path(str(tmp_path / "storage" / "docstore.json"))
    storage2 = StorageContext.from_defaults(
        docstore=SimpleDocumentStore(simple_kvstore=kv2), persist_dir=str(tmp_path / "storage")
    )
    assert sorted(storage2.docstore.docs) == ["a", "b"] and storage2.docstore.get_document("a").text == TEXT_A
    store2 = KVDigestStore(kv2, dtype="int8")
    assert sorted(store2.keys()) == sorted(digest_key(d) for d in digests)
    again, hits = store2.compress_cached(compressor, [d.text for d in docs])
    assert hits == [True, True]
    for x, y in zip(again, digests, strict=True):  # int8: the vectors as stored, the same bits as before persisting
        assert torch.equal(x.embeddings, quantize.decode(quantize.encode(y.embeddings, "int8"), torch.float32))
        assert torch.equal(x.embeddings, store.get(digest_key(y)).embeddings)


@pytest.mark.parametrize("kind", KINDS)
def test_usable_where_a_digest_store_is(tmp_path, kind, soft_lm, compressor):
    store = KVDigestStore(make_kv(kind, tmp_path))
    assert isinstance(store, BaseDigestStore) and isinstance(DigestStore(), BaseDigestStore)
    assert isinstance(PackedDigestStore(tmp_path / "p"), BaseDigestStore)
    reference = DigestStore()
    digests, hits = store.compress_cached(compressor, [TEXT_A, TEXT_B, TEXT_A])
    assert hits == [False, False, False] and store.compress_cached(compressor, [TEXT_B])[1] == [True]
    ref, _ = reference.compress_cached(compressor, [TEXT_A, TEXT_B])
    messages = [{"role": "user", "content": f"{marker_for(digest_key(ref[0]))}\n{marker_for(digest_key(ref[1]))}"}]
    # bf16 storage of the tiny compressor's fp32 digests: the prompt is the one of the rounded vectors
    rounded = {digest_key(d): d.to(dtype=torch.bfloat16).to(dtype=torch.float32) for d in ref}
    fresh = KVDigestStore(reopen(kind, store.kv, tmp_path))
    assert torch.equal(
        soft_lm.build_chat_inputs(messages, fresh).embeds, soft_lm.build_chat_inputs(messages, rounded).embeds
    )
