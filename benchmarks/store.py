"""Digest stores on the CPU (issue 17): the folder `DigestStore` (one safetensors file per digest, the baseline)
against `PackedDigestStore` on its two backends (append-only shards + an SQLite index; LMDB), in one run.

Synthetic digests of --rows x --width bf16 vectors (128 x 576: one 512-token window at SmolLM2's width; values
from a pool of random tensors, every digest its own key). For each store: write throughput (`put` per digest for
the folder store, `put_many` of --write-batch for the packed ones), bytes on disk per chunk (allocated blocks),
random-read latency p50/p99 of one digest (`get`) and of a batch of 16 (`get_many`; the folder store: 16 `get`s)
from a warm page cache, through a fresh store object whose memory cache is off (max_cached=1). Then each storage
dtype (bf16, int8, fp8) on --dtype-num digests: size per chunk, write rate, round-trip error. Then an index of
--index-keys keys with tiny (1 x 8) digests: write rate and read latency at that many keys.

    python -m benchmarks.store                                   # 20,000 digests, 1M-key index
    python -m benchmarks.store --num 200 --dtype-num 50 --index-keys 2000 --reads 50   # smoke
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import common
from icformer_rag.digest import Digest
from icformer_rag.packed_store import PackedDigestStore
from icformer_rag.quantize import CODECS
from icformer_rag.store import DigestStore, digest_key

FINGERPRINT = "benchmark-synthetic"
NOTE = "synthetic digests (random bf16 vectors from a pool): storage speed does not depend on the values"


def make_digest(i: int, pool: list[torch.Tensor]) -> Digest:
    e = pool[i % len(pool)]
    h = hashlib.sha256(f"chunk-{i}".encode()).hexdigest()
    return Digest(e, num_tokens=4 * e.shape[0], content_hash=h, fingerprint=FINGERPRINT, window_digests=[e.shape[0]])


def make_pool(rows: int, width: int, size: int = 32, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(rows, width, generator=g) * 0.05).to(torch.bfloat16) for _ in range(size)]


def disk_bytes(folder: Path) -> int:
    """Allocated bytes of every file under `folder` (what `du` counts)."""
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def open_store(kind: str, path: Path, codec: str = "bf16", max_cached: int | None = 4096) -> Any:
    if kind == "folder":
        return DigestStore(path, max_cached=max_cached)
    return PackedDigestStore(path, backend=kind, dtype=codec, max_cached=max_cached)


def write(kind: str, store: Any, num: int, pool: list[torch.Tensor], batch: int, start: int = 0) -> float:
    """Seconds to write digests start..start+num."""
    t0 = time.perf_counter()
    for lo in range(start, start + num, batch):
        digests = [make_digest(i, pool) for i in range(lo, min(lo + batch, start + num))]
        if kind == "folder":
            for d in digests:
                store.put(d)
        else:
            store.put_many(digests)
    return time.perf_counter() - t0


def read_latency(
    stores: dict[str, Any], keys: list[str], reads: int, batch: int, seed: int = 1
) -> dict[str, dict[str, Any]]:
    """Per store: p50/p99 of one random `get`, and of a random batch of `batch` keys (`get_many`; the folder
    store: `get`s). The stores are interleaved, in a rotating order, on the same random keys: a busy moment of a
    shared machine falls on all of them alike."""
    rng = random.Random(seed)
    kinds = list(stores)
    for k in rng.sample(keys, min(20, len(keys))):  # warm-up: imports, connections, first mappings
        for store in stores.values():
            store.get(k)
    singles: dict[str, list[float]] = {kind: [] for kind in kinds}
    batches: dict[str, list[float]] = {kind: [] for kind in kinds}
    for r in range(reads):
        k = rng.choice(keys)
        for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
            t0 = time.perf_counter()
            d = stores[kind].get(k)
            singles[kind].append(time.perf_counter() - t0)
            assert d is not None
    for r in range(max(1, reads // 4)):
        ks = rng.sample(keys, batch)
        for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
            store = stores[kind]
            t0 = time.perf_counter()
            got = [store.get(k) for k in ks] if kind == "folder" else store.get_many(ks)
            batches[kind].append(time.perf_counter() - t0)
            assert all(d is not None for d in got)
    return {
        kind: {
            "get_p50_ms": 1e3 * _pct(singles[kind], 50),
            "get_p99_ms": 1e3 * _pct(singles[kind], 99),
            f"batch{batch}_p50_ms": 1e3 * _pct(batches[kind], 50),
            f"batch{batch}_p99_ms": 1e3 * _pct(batches[kind], 99),
            "get_times_s": singles[kind],
            "batch_times_s": batches[kind],
        }
        for kind in kinds
    }


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=20_000, help="digests per store for the main comparison")
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--width", type=int, default=576)
    parser.add_argument("--dtype-num", type=int, default=2_000, help="digests per storage dtype")
    parser.add_argument("--index-keys", type=int, default=1_000_000, help="keys of the tiny-digest index (0: skip)")
    parser.add_argument("--reads", type=int, default=2_000, help="timed random reads per store")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--write-batch", type=int, default=64)
    parser.add_argument("--stores", default="folder,shards,lmdb", help="comma-separated: folder, shards, lmdb")
    parser.add_argument("--workdir", default=None, help="where the stores are written (default: a temp folder)")
    args = parser.parse_args(argv)
    common.apply_threads(args)
    device = torch.device("cpu")
    kinds = [k for k in args.stores.split(",") if k]
    if "lmdb" in kinds and importlib.util.find_spec("lmdb") is None:
        print("lmdb is not installed: skipping the lmdb backend", file=sys.stderr)
        kinds.remove("lmdb")
    root = Path(tempfile.mkdtemp(prefix="store-bench-", dir=args.workdir))
    pool = make_pool(args.rows, args.width)
    raw = args.rows * args.width * 2
    rows: list[dict[str, Any]] = []
    try:
        # ------------------------------------------------------------------ stores at --num bf16 digests
        written = {}
        for kind in kinds:
            path = root / f"main-{kind}"
            store = open_store(kind, path)
            written[kind] = (path, write(kind, store, args.num, pool, args.write_batch))
            if hasattr(store, "close"):
                store.close()
            print(f"{kind}: {args.num / written[kind][1]:.0f} digests/s", flush=True)
        keys = [digest_key(make_digest(i, pool)) for i in range(args.num)]
        readers = {kind: open_store(kind, path, max_cached=1) for kind, (path, _) in written.items()}
        lats = read_latency(readers, keys, args.reads, args.batch)
        for kind, (path, secs) in written.items():
            if hasattr(readers[kind], "close"):
                readers[kind].close()
            size = disk_bytes(path)
            rows.append(
                {
                    "part": "main",
                    "store": kind,
                    "dtype": "bf16",
                    "digests": args.num,
                    "write_digests_per_s": args.num / secs,
                    "write_MB_per_s": args.num * raw / secs / 1e6,
                    "bytes_per_chunk": size / args.num,
                    "vs_raw": size / args.num / raw,
                    **lats[kind],
                }
            )
            shutil.rmtree(path, ignore_errors=True)
        # ------------------------------------------------------------------ storage dtypes
        for kind in [k for k in kinds if k != "folder"]:
            for codec in CODECS:
                path = root / f"dtype-{kind}-{codec}"
                store = open_store(kind, path, codec)
                secs = write(kind, store, args.dtype_num, pool, args.write_batch)
                store.close()
                keys = [digest_key(make_digest(i, pool)) for i in range(args.dtype_num)]
                reader = open_store(kind, path, codec, max_cached=1)
                lat = read_latency({kind: reader}, keys, max(50, args.reads // 4), args.batch)[kind]
                errs = []
                for i in range(min(len(pool), len(keys))):
                    got = reader.get(keys[i]).embeddings.float()
                    ref = pool[i].float()
                    errs.append(
                        (
                            ((got - ref).norm() / ref.norm()).item(),
                            ((got - ref).abs().amax(1) / ref.abs().amax(1)).max().item(),
                        )
                    )
                reader.close()
                size = disk_bytes(path)
                rows.append(
                    {
                        "part": "dtype",
                        "store": kind,
                        "dtype": codec,
                        "digests": args.dtype_num,
                        "write_digests_per_s": args.dtype_num / secs,
                        "bytes_per_chunk": size / args.dtype_num,
                        "vs_raw": size / args.dtype_num / raw,
                        "rel_rms_error": statistics.mean(e[0] for e in errs),
                        "max_err_over_row_absmax": max(e[1] for e in errs),
                        **lat,
                    }
                )
                shutil.rmtree(path, ignore_errors=True)
        # ------------------------------------------------------------------ a large index of tiny digests
        if args.index_keys:
            tiny = make_pool(1, 8)
            for kind in [k for k in kinds if k != "folder"]:
                path = root / f"index-{kind}"
                store = open_store(kind, path)
                secs = write(kind, store, args.index_keys, tiny, 1024)
                store.close()
                rng = random.Random(2)
                keys = [digest_key(make_digest(rng.randrange(args.index_keys), tiny)) for _ in range(2_000)]
                reader = open_store(kind, path, max_cached=1)
                lat = read_latency({kind: reader}, keys, args.reads, args.batch)[kind]
                n = len(reader)
                reader.close()
                size = disk_bytes(path)
                rows.append(
                    {
                        "part": "index",
                        "store": kind,
                        "dtype": "bf16",
                        "digests": n,
                        "write_digests_per_s": args.index_keys / secs,
                        "bytes_per_chunk": size / args.index_keys,
                        **lat,
                    }
                )
                print(f"index {kind}: {n} keys, p99 {lat['get_p99_ms']:.3f} ms", flush=True)
                shutil.rmtree(path, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    b = args.batch
    columns = ["part", "store", "dtype", "digests", "write_digests_per_s", "write_MB_per_s", "bytes_per_chunk"]
    columns += ["vs_raw", "get_p50_ms", "get_p99_ms", f"batch{b}_p50_ms", f"batch{b}_p99_ms"]
    columns += ["rel_rms_error", "max_err_over_row_absmax"]
    table = (
        f"Digest stores, {args.rows} x {args.width} bf16 digests ({raw:,} bytes of vectors each), CPU, warm page "
        f"cache; {args.reads} random reads per store; index: {args.index_keys:,} keys of 1 x 8 digests\n\n"
    )
    table += common.format_table(rows, columns)
    payload = {"args": vars(args), "note_data": NOTE, "rows": rows, "raw_bytes_per_chunk": raw}
    return common.finish("store", args, device, payload, table)


if __name__ == "__main__":
    main()
