"""Indexing on Ray Data (issue 17) on this CPU: `icformer_rag.indexing.index_documents` end to end (JSONL in, packed
store out) in one process and on a local Ray cluster at 1 and 2 CPU workers, one run each, into fresh stores.

The corpus is --num-docs synthetic encyclopedia-like documents of --doc-tokens tokens (the default LLM's
tokenizer; chunks of the compressor's 512-token window), compressed by a random-weight compressor of --shape
(speed does not depend on weight values). Per mode: total seconds, seconds until the first shard was committed
(Ray: cluster and actor start-up, the compressor shipped to each actor), chunks/s over the whole run and after
the first shard (steady state), and whether its digests are bit-identical to the one-process run's.

    python -m benchmarks.ray_indexing                          # 192 documents of ~900 tokens, smollm2 shape
    python -m benchmarks.ray_indexing --num-docs 16 --shape tiny --doc-tokens 100   # smoke
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import common
from benchmarks.indexing import build_compressor
from benchmarks.rag_latency import make_documents


def run_mode(
    name: str, src: Path, store: Path, compressor: Any, workers: int, use_ray: bool, shard_size: int
) -> dict[str, Any]:
    from icformer_rag.indexing import index_documents
    from icformer_rag.packed_store import PackedDigestStore

    done: list[tuple[float, int]] = []
    ray = None
    start = time.perf_counter()
    if use_ray:
        import ray

        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        result = index_documents(
            src,
            store,
            compressor=compressor,
            shard_size=shard_size,
            workers=workers,
            use_ray=use_ray,
            show_progress=False,
            on_shard=lambda s: done.append((time.perf_counter(), len(s.chunks))),
        )
    finally:
        if ray is not None:
            ray.shutdown()
    total = done[-1][0] - start
    first = done[0][0] - start
    steady = sum(n for _, n in done[1:]) / max(done[-1][0] - done[0][0], 1e-9)
    with PackedDigestStore(store) as s:
        keys = list(s.keys())
        digests = dict(zip(keys, (d.embeddings for d in s.get_many(keys)), strict=True))
    print(f"  {name}: {total:.1f} s, {result.chunks / total:.1f} chunks/s (steady {steady:.1f})", file=sys.stderr)
    return {
        "mode": name,
        "workers": workers,
        "ray": use_ray,
        "seconds": total,
        "first_shard_s": first,
        "chunks": result.chunks,
        "digests": result.written,
        "chunks_per_s": result.chunks / total,
        "steady_chunks_per_s": steady,
        "_digests": digests,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="smollm2", choices=sorted(common.SHAPES))
    parser.add_argument("--num-docs", type=int, default=192)
    parser.add_argument("--doc-tokens", type=int, default=900)
    parser.add_argument("--shard-size", type=int, default=8, help="documents per shard")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="Ray worker counts to time")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads or 1)  # one thread, as each Ray worker (num_cpus=1) has
    device, dtype = torch.device("cpu"), torch.float32
    from icformer_rag.llm import load_tokenizer

    shape = common.SHAPES[args.shape]
    compressor = build_compressor(shape, device, dtype, 32 * 512)
    compressor.tokenizer = load_tokenizer()
    docs = make_documents(compressor.tokenizer, args.num_docs, args.doc_tokens)
    work = Path(tempfile.mkdtemp(prefix="ray-indexing-"))
    rows = []
    try:
        src = work / "docs.jsonl"
        src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(docs)))
        print(f"indexing {len(docs)} documents of {args.doc_tokens} tokens, shape {shape.name}", file=sys.stderr)
        rows.append(run_mode("one process", src, work / "local", compressor, 1, False, args.shard_size))
        for n in args.workers:
            rows.append(run_mode(f"ray, {n} worker(s)", src, work / f"ray{n}", compressor, n, True, args.shard_size))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base, ray1 = rows[0], next((r for r in rows if r["ray"]), None)
    ref = base["_digests"]
    for r in rows:
        d = r.pop("_digests") if r is not base else ref
        r["identical_to_one_process"] = d.keys() == ref.keys() and all(torch.equal(v, ref[k]) for k, v in d.items())
        r["speedup_vs_1_worker"] = ray1["seconds"] / r["seconds"] if ray1 and r["ray"] else None
        r["steady_speedup_vs_1_worker"] = (
            r["steady_chunks_per_s"] / ray1["steady_chunks_per_s"] if ray1 and r["ray"] else None
        )
    base.pop("_digests")
    load = os.getloadavg()[0]
    table = (
        f"indexing on Ray Data, {len(docs)} documents of {args.doc_tokens} tokens ({base['chunks']} chunks of "
        f"{compressor.config.window_tokens} tokens), shape {shape.name}, cpu, fp32, 1 torch thread per worker (random "
        f"weights); load average {load:.1f}\n"
    )
    table += common.format_table(
        rows,
        [
            "mode",
            "seconds",
            "first_shard_s",
            "chunks_per_s",
            "steady_chunks_per_s",
            "speedup_vs_1_worker",
            "steady_speedup_vs_1_worker",
            "identical_to_one_process",
        ],
    )
    payload = {"shape": shape.__dict__, "args": vars(args), "load_average_1min": load, "rows": rows}
    return common.finish(f"ray_indexing_{shape.name}", args, device, payload, table)


if __name__ == "__main__":
    main()
