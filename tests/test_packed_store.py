"""PackedDigestStore (shards + SQLite index, and LMDB) and the digest codecs of icformer_rag.quantize (issue 17):
interface parity with DigestStore, round trips per storage dtype, damaged and torn records never served, kill -9
mid-write then reopen, compaction, migration from the folder format, one writer with concurrent readers."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from icformer_rag import quantize
from icformer_rag.digest import Digest, InvalidDigestError
from icformer_rag.packed_store import PackedDigestStore, StoreLockedError, migrate_folder
from icformer_rag.store import DigestStore, digest_key, key_for

ROOT = Path(__file__).resolve().parents[1]
HAS_LMDB = importlib.util.find_spec("lmdb") is not None
BACKENDS = ["shards", pytest.param("lmdb", marks=pytest.mark.skipif(not HAS_LMDB, reason="lmdb not installed"))]
TEXT_A = "The town of Velmora was founded in 1723 by Ada Krenn, a glassmaker."
TEXT_B = "Glass is made from sand, soda and lime. " * 6


def tiny(i: int, rows: int = 4, width: int = 8, dtype: torch.dtype = torch.bfloat16) -> Digest:
    g = torch.Generator().manual_seed(i)
    e = (torch.randn(rows, width, generator=g) * (1 + i % 3)).to(dtype)
    h = hashlib.sha256(f"text {i}".encode()).hexdigest()
    return Digest(e, num_tokens=4 * rows, content_hash=h, fingerprint="test-fp", window_digests=[rows])


def run_script(tmp_path: Path, body: str, *args: str, **kw) -> subprocess.Popen:
    script = tmp_path / f"child_{time.monotonic_ns()}.py"
    prelude, _, rest = body.partition("\n# --- child\n")
    script.write_text(prelude + textwrap.dedent(rest) if rest else textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, str(script), *args], cwd=ROOT, env=env, text=True, **kw)


CHILD_PRELUDE = """
import hashlib, os, signal, sys, torch
from icformer_rag.digest import Digest
from icformer_rag.packed_store import PackedDigestStore

def tiny(i, rows=4, width=8):
    g = torch.Generator().manual_seed(i)
    e = (torch.randn(rows, width, generator=g) * (1 + i % 3)).to(torch.bfloat16)
    h = hashlib.sha256(f"text {i}".encode()).hexdigest()
    return Digest(e, num_tokens=4 * rows, content_hash=h, fingerprint="test-fp", window_digests=[rows])
# --- child
"""


# ----------------------------------------------------------------------------------------------- interface
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("codec", quantize.CODECS)
def test_roundtrip_and_interface(tmp_path, backend, codec):
    store = PackedDigestStore(tmp_path / "s", backend=backend, dtype=codec)
    digests = [tiny(i) for i in range(6)]
    key = store.put(digests[0])
    assert key == digest_key(digests[0]) and key in store and len(store) == 1
    keys = store.put_many(digests[1:])
    assert [key, *keys] == [digest_key(d) for d in digests] and len(store) == 6
    assert sorted(store.keys()) == sorted([key, *keys]) == list(store)
    assert store.get("0" * 24) is None and "0" * 24 not in store
    for bad in ("../../etc/passwd", "ABC", 42, None):
        assert store.get(bad) is None and bad not in store
    store.close()
    again = PackedDigestStore(tmp_path / "s", backend=backend, dtype=codec)  # a fresh store reads the records
    got = again.get_many([key, "f" * 24, *keys])
    assert got[1] is None
    for d, g in zip(digests, [got[0], *got[2:]], strict=True):
        assert g.embeddings.dtype == torch.bfloat16 and g.embeddings.shape == d.embeddings.shape
        assert (g.num_tokens, g.content_hash, g.fingerprint, g.window_digests) == (
            d.num_tokens,
            d.content_hash,
            d.fingerprint,
            d.window_digests,
        )
        err = (g.embeddings.float() - d.embeddings.float()).abs()
        assert bool((err <= quantize.error_bound(d.embeddings, codec) + 1e-2 * d.embeddings.float().abs()).all())
        if codec == "bf16":
            assert torch.equal(g.embeddings, d.embeddings)
    assert again.delete(key) == 1 and again.delete(key) == 0 and key not in again and len(again) == 5
    assert again.delete(["nonsense", keys[0]]) == 1
    again.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_dtype_kept_and_out_dtype(tmp_path, backend):
    d32 = tiny(1, dtype=torch.float32)
    with PackedDigestStore(tmp_path / "s", backend=backend) as store:
        key = store.put(d32)
    with PackedDigestStore(tmp_path / "s", backend=backend) as store:
        got = store.get(key)  # stored as bf16, read back in the dtype it was put in
        assert got.embeddings.dtype == torch.float32
        assert torch.equal(got.embeddings, d32.embeddings.to(torch.bfloat16).float())
    with PackedDigestStore(tmp_path / "s", backend=backend, out_dtype=torch.float16) as store:
        assert store.get(key).embeddings.dtype == torch.float16


def test_parity_with_digest_store(compressor, tmp_path):
    folder, packed = DigestStore(tmp_path / "folder"), PackedDigestStore(tmp_path / "packed")
    texts = [TEXT_A, TEXT_B, TEXT_A]
    d1, hits1 = folder.compress_cached(compressor, texts)
    p1, phits1 = packed.compress_cached(compressor, texts)
    assert hits1 == phits1 == [False, False, False]
    _, hits2 = folder.compress_cached(compressor, [TEXT_B, "new text"])
    p2, phits2 = packed.compress_cached(compressor, [TEXT_B, "new text"])
    assert hits2 == phits2 == [True, False]
    assert len(folder) == len(packed) == 3
    assert {key_for(t, compressor.fingerprint) for t in (TEXT_A, TEXT_B, "new text")} == set(packed.keys())
    fresh = PackedDigestStore(tmp_path / "packed")
    for d in d1:
        got = fresh.get(digest_key(d))
        assert got.embeddings.dtype == d.embeddings.dtype and got.embeddings.shape == d.embeddings.shape
        assert torch.allclose(got.embeddings, d.embeddings, rtol=2**-7, atol=1e-6)  # bf16 storage
    # Another compressor's digest of the same text is another key: never served for this one.
    assert fresh.get(key_for(TEXT_A, "another-compressor")) is None
    # A folder store's path is refused: it needs the migration.
    with pytest.raises(ValueError, match="migrate"):
        PackedDigestStore(tmp_path / "folder")
    with pytest.raises(ValueError, match="lmdb"):
        PackedDigestStore(tmp_path / "packed", backend="lmdb")


def test_put_refuses_what_digest_store_refuses(tmp_path):
    store = PackedDigestStore(tmp_path / "s")
    bad = tiny(0)
    bad.embeddings[0, 0] = float("nan")
    with pytest.raises(InvalidDigestError):
        store.put(bad)
    with pytest.raises(TypeError):
        store.put("not a digest")
    assert len(store) == 0
    d = tiny(1)
    key = store.put(d)
    d.embeddings[0, 0] = float("inf")  # the caller changed the cached object in place
    with pytest.raises(InvalidDigestError, match="changed in memory"):
        store.get(key)
    assert torch.isfinite(store.get(key).embeddings).all()  # the record itself is sound
    ro = PackedDigestStore(tmp_path / "s", readonly=True)
    with pytest.raises(PermissionError):
        ro.put(tiny(2))
    with pytest.raises(ValueError, match="unknown digest storage dtype"):
        PackedDigestStore(tmp_path / "t", dtype="int4")


# ----------------------------------------------------------------------------------- damage and crashes
def _record_location(path: Path, key: str) -> tuple[Path, int, int]:
    with sqlite3.connect(path / "index.sqlite") as conn:
        shard, offset, length = conn.execute(
            "SELECT shard, offset, length FROM digests WHERE key = ?", (key,)
        ).fetchone()
    return path / "shards" / f"{shard:06d}.bin", offset, length


@pytest.mark.parametrize("where", ["payload", "header", "head"])
def test_damaged_record_is_never_served(tmp_path, where):
    store = PackedDigestStore(tmp_path / "s")
    keys = store.put_many([tiny(i) for i in range(3)])
    store.close()
    shard, offset, length = _record_location(tmp_path / "s", keys[1])
    at = {"payload": offset + length - 3, "header": offset + 40, "head": offset + 1}[where]
    with open(shard, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x10]))
    fresh = PackedDigestStore(tmp_path / "s")
    with pytest.raises(InvalidDigestError, match=keys[1]):
        fresh.get(keys[1])
    assert fresh.verify() == {"ok": 2, "damaged": [keys[1]]}
    assert fresh.get(keys[0]) is not None and fresh.get(keys[2]) is not None
    fresh.put(tiny(1))  # putting it again heals it
    assert PackedDigestStore(tmp_path / "s").get(keys[1]) is not None


def test_truncated_shard_and_foreign_record(tmp_path):
    store = PackedDigestStore(tmp_path / "s")
    keys = store.put_many([tiny(i) for i in range(3)])
    store.close()
    shard, offset, length = _record_location(tmp_path / "s", keys[2])
    os.truncate(shard, offset + length // 2)  # data the index points at is gone (a power loss without sync)
    fresh = PackedDigestStore(tmp_path / "s")
    with pytest.raises(InvalidDigestError, match="missing"):
        fresh.get(keys[2])
    assert fresh.get(keys[0]) is not None
    # A sound record under another key (an index edited by hand) is a miss, not the other digest.
    _, o0, n0 = _record_location(tmp_path / "s", keys[0])
    with sqlite3.connect(tmp_path / "s" / "index.sqlite") as conn:
        conn.execute("UPDATE digests SET offset = ?, length = ? WHERE key = ?", (o0, n0, keys[1]))
    assert PackedDigestStore(tmp_path / "s").get(keys[1]) is None


def test_kill_mid_record_then_reopen(tmp_path):
    """A writer killed (SIGKILL) half-way through writing a record: everything reported written is there, the torn
    record is not served, the next writer appends after the torn tail, and compaction drops it."""
    path = tmp_path / "s"
    child = run_script(
        tmp_path,
        CHILD_PRELUDE
        + """
        import icformer_rag.packed_store as ps
        store = PackedDigestStore(sys.argv[1])
        for i in range(5):
            print(store.put(tiny(i)), flush=True)
        def torn(fd, data, pos):  # half of the record, then the process dies
            os.pwrite(fd, data[: len(data) // 2], pos)
            os.kill(os.getpid(), signal.SIGKILL)
        ps._pwrite_all = torn
        store.put(tiny(5))
        print("not reached", flush=True)
        """,
        str(path),
        stdout=subprocess.PIPE,
    )
    out, _ = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL
    written = out.split()
    assert len(written) == 5 and "not" not in written
    store = PackedDigestStore(path)
    assert sorted(store.keys()) == sorted(written)
    for i, key in enumerate(written):
        assert torch.equal(store.get(key).embeddings, tiny(i).embeddings)
    assert store.get(digest_key(tiny(5))) is None  # torn: never indexed, never served
    shard = path / "shards" / "000000.bin"
    torn_size = shard.stat().st_size
    key6 = store.put(tiny(6))  # appended after the torn tail
    assert PackedDigestStore(path).get(key6) is not None and shard.stat().st_size > torn_size
    report = store.compact()
    assert report["records_moved"] == 6 and report["bytes_after"] < report["bytes_before"]
    fresh = PackedDigestStore(path)
    assert sorted(fresh.keys()) == sorted([*written, key6])
    assert all(fresh.get(k) is not None for k in fresh.keys())


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_at_random_times_loses_nothing_reported(tmp_path, backend):
    """kill -9 a writer at three moments of a stream of batched writes; reopen each time: every key it reported
    written is there and sound, and every key served is sound (never a torn record)."""
    path = tmp_path / "s"
    reported: list[str] = []
    start = 0
    for delay in (0.3, 0.7, 1.1):
        child = run_script(
            tmp_path,
            CHILD_PRELUDE
            + """
            store = PackedDigestStore(sys.argv[1], backend=sys.argv[2])
            i = int(sys.argv[3])
            while True:
                keys = store.put_many([tiny(j, rows=16, width=64) for j in range(i, i + 8)])
                print(" ".join(keys), flush=True)
                i += 8
            """,
            str(path),
            backend,
            str(start),
            stdout=subprocess.PIPE,
        )
        lines = [child.stdout.readline()]  # it has started writing
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=60)
        lines += rest.splitlines()
        reported += [k for line in lines for k in line.split()]
        start += 10_000
        with PackedDigestStore(path, backend=backend) as store:
            held = set(store.keys())
            assert set(reported) <= held
            for key in held:  # everything served is sound: get() raises on anything torn
                assert store.get(key) is not None


# ------------------------------------------------------------------------------------------------ compaction
@pytest.mark.parametrize("backend", BACKENDS)
def test_compaction(tmp_path, backend):
    store = PackedDigestStore(tmp_path / "s", backend=backend, shard_bytes=4096)
    digests = [tiny(i, rows=8, width=32) for i in range(40)]
    keys = store.put_many(digests)
    store.put_many(digests[:5])  # replaced: their first records are dead
    assert store.delete(keys[10:30]) == 20
    before = store.disk_bytes()
    reader = PackedDigestStore(tmp_path / "s", backend=backend) if backend == "shards" else None
    if reader is not None:
        assert reader.get(keys[35]) is not None  # maps the old shards
    report = store.compact()
    assert store.disk_bytes() < before and report["bytes_after"] < report["bytes_before"]
    assert len(store) == 20 and sorted(store.keys()) == sorted(keys[:10] + keys[30:])
    for i in [*range(10), *range(30, 40)]:
        assert torch.equal(store.get(keys[i]).embeddings, digests[i].embeddings)
    assert all(store.get(keys[i]) is None for i in range(10, 30))
    if reader is not None:  # a reader opened before compaction reads through it (old shards are unlinked)
        reader._cache.clear()
        assert torch.equal(reader.get(keys[36]).embeddings, digests[36].embeddings)
        assert reader.get(keys[12]) is None
    store.close()


# ------------------------------------------------------------------------------------------------- migration
def test_migrate_folder(tmp_path):
    folder = DigestStore(tmp_path / "folder")
    digests = [tiny(i) for i in range(5)]
    keys = [folder.put(d) for d in digests]
    (tmp_path / "folder" / f"{'a' * 24}.digest.safetensors").write_bytes(b"garbage")
    damaged = tiny(99)
    damaged_path = tmp_path / "folder" / f"{digest_key(damaged)}.digest.safetensors"
    damaged.save(damaged_path)
    raw = bytearray(damaged_path.read_bytes())
    raw[-2] ^= 0x01  # a flipped bit in the vectors: the saved sha256 no longer fits
    damaged_path.write_bytes(bytes(raw))
    packed = PackedDigestStore(tmp_path / "packed")
    result = migrate_folder(tmp_path / "folder", packed, batch=2)
    assert result["migrated"] == 5 and len(result["damaged"]) == 1 and len(result["not_digests"]) == 1
    assert sorted(packed.keys()) == sorted(keys)
    fresh = PackedDigestStore(tmp_path / "packed")
    for k, d in zip(keys, digests, strict=True):
        assert torch.equal(fresh.get(k).embeddings, d.embeddings)
    again = migrate_folder(tmp_path / "folder", packed, remove=True)  # rerunning is harmless
    assert again["migrated"] == 5 and len(packed) == 5
    assert not any(Path(tmp_path / "folder").glob(f"{keys[0]}*"))


# ---------------------------------------------------------------------------------------------- quantization
@pytest.mark.parametrize("codec", quantize.CODECS)
def test_quantization_error_bounds_and_size(codec):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 576, generator=g) * torch.logspace(-4, 2, 64)[:, None]
    x[3] = 0.0  # a zero vector
    x[5, 7] = 1e4  # an outlier in one vector
    for dtype in (torch.float32, torch.bfloat16):
        v = x.to(dtype)
        enc = quantize.encode(v, codec)
        back = quantize.decode(enc, torch.float32)
        err = (back - v.float()).abs()
        assert bool((err <= quantize.error_bound(v, codec) + 1e-30).all()), (codec, dtype, err.max())
        assert torch.equal(back[3], torch.zeros(576))
        assert enc.nbytes == quantize.stored_bytes(64, 576, codec)
        assert quantize.decode(enc, dtype).dtype == dtype
    bf16 = quantize.stored_bytes(128, 576, "bf16")
    if codec != "bf16":
        assert quantize.stored_bytes(128, 576, codec) <= 0.51 * bf16  # 8-bit halves the store
        rel = ((quantize.decode(quantize.encode(x, codec), torch.float32) - x).norm(dim=1) / x.norm(dim=1))[6:]
        assert float(rel.max()) < (0.01 if codec == "int8" else 0.05)


def test_codec_names():
    assert quantize.codec_name(torch.float8_e4m3fn) == quantize.codec_name("e4m3") == "fp8"
    assert quantize.codec_name(torch.bfloat16) == "bf16" and quantize.codec_name("int8") == "int8"
    with pytest.raises(ValueError):
        quantize.codec_name("fp4")


# ----------------------------------------------------------------------------------------------- concurrency
@pytest.mark.parametrize("backend", BACKENDS)
def test_readers_with_one_writer(tmp_path, backend):
    """A writer process streams digests while two reader processes and two reader threads read every key they see:
    no reader ever errs or gets a wrong digest."""
    path = tmp_path / "s"
    PackedDigestStore(path, backend=backend, shard_bytes=64 * 1024).close()
    writer = run_script(
        tmp_path,
        CHILD_PRELUDE
        + """
        store = PackedDigestStore(sys.argv[1], backend=sys.argv[2], shard_bytes=64 * 1024)
        for i in range(0, 400, 4):
            store.put_many([tiny(j) for j in range(i, i + 4)])
        print("done", flush=True)
        """,
        str(path),
        backend,
        stdout=subprocess.PIPE,
    )
    readers = [
        run_script(
            tmp_path,
            CHILD_PRELUDE
            + """
            import time
            from icformer_rag.store import digest_key
            expect = {digest_key(tiny(i)): i for i in range(400)}
            store = PackedDigestStore(sys.argv[1], backend=sys.argv[2], max_cached=1, readonly=True)
            seen, deadline = set(), time.monotonic() + 60
            while len(seen) < 400 and time.monotonic() < deadline:
                for key in list(store.keys()):
                    d = store.get(key)
                    assert torch.equal(d.embeddings, tiny(expect[key]).embeddings), key
                    seen.add(key)
            print(len(seen), flush=True)
            """,
            str(path),
            backend,
            stdout=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    errors: list[BaseException] = []
    expect = {digest_key(tiny(i)): i for i in range(400)}

    def read_loop() -> None:
        try:
            store = PackedDigestStore(path, backend=backend, max_cached=1, readonly=True)
            deadline = time.monotonic() + 60
            while len(store) < 400 and time.monotonic() < deadline:
                for key in list(store.keys())[-20:]:
                    assert torch.equal(store.get(key).embeddings, tiny(expect[key]).embeddings)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            errors.append(err)

    threads = [threading.Thread(target=read_loop) for _ in range(2)]
    for t in threads:
        t.start()
    assert writer.communicate(timeout=120)[0].strip() == "done" and writer.returncode == 0
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for r in readers:
        out, _ = r.communicate(timeout=120)
        assert r.returncode == 0 and out.strip() == "400"


def test_one_writer_at_a_time(tmp_path):
    path = tmp_path / "s"
    store = PackedDigestStore(path, lock_timeout=0.3)
    store.put(tiny(0))
    holder = run_script(
        tmp_path,
        """
        import fcntl, sys, time
        f = open(sys.argv[1], "a")
        fcntl.flock(f, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
        """,
        str(path / "writer.lock"),
        "1.5",
        stdout=subprocess.PIPE,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(StoreLockedError):
        store.put(tiny(1))
    assert store.get(digest_key(tiny(0))) is not None  # reads never wait for the writer
    patient = PackedDigestStore(path, lock_timeout=30)
    key = patient.put(tiny(1))  # waits for the other writer, then writes
    holder.communicate(timeout=30)
    assert PackedDigestStore(path).get(key) is not None


def test_benchmark_smoke(tmp_path):
    from benchmarks import store as bench

    args = ["--num", "40", "--dtype-num", "20", "--index-keys", "300", "--reads", "20", "--out", str(tmp_path)]
    payload = bench.main(
        [*args, "--workdir", str(tmp_path), "--stores", "folder,shards" + (",lmdb" if HAS_LMDB else "")]
    )
    parts = {(r["part"], r["store"], r["dtype"]) for r in payload["rows"]}
    assert ("main", "folder", "bf16") in parts and ("index", "shards", "bf16") in parts
    assert {("dtype", "shards", c) for c in quantize.CODECS} <= parts
    for r in payload["rows"]:
        assert r["write_digests_per_s"] > 0 and r["get_p99_ms"] >= r["get_p50_ms"] > 0 and r["bytes_per_chunk"] > 0
    int8 = next(r for r in payload["rows"] if r["part"] == "dtype" and r["dtype"] == "int8")
    bf16 = next(r for r in payload["rows"] if r["part"] == "dtype" and r["dtype"] == "bf16")
    assert int8["bytes_per_chunk"] < 0.6 * bf16["bytes_per_chunk"] and int8["rel_rms_error"] < 0.02
    assert (tmp_path / "store.json").is_file()
