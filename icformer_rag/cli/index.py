"""`icformer-rag index`: a corpus (JSONL, Parquet, text files) into a digest store, resumably."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from . import loading
from .common import EXIT_OK, CLIError, SubParsers, add_command, add_json_option, check_writable, emit_json
from .options import ModelOptions


def register_index(subparsers: SubParsers) -> None:
    p = add_command(
        subparsers,
        "index",
        run_index,
        help="index a corpus (JSONL, Parquet or a folder of text files) into a digest store, resumably",
        description="Read the documents of SOURCE, cut them into chunks of the compressor's window, compress each "
        "distinct chunk once and write the digests to the packed digest store STORE, shard by shard with a progress "
        "bar. A rerun skips the shards already done (after a crash, or with documents added). --workers N (or --ray) "
        "runs the compression on Ray Data, N actors with one compressor each (pip install 'icformer-rag[ray]').",
    )
    p.add_argument("source", metavar="SOURCE", help="a .jsonl, .parquet, .txt or .md file, or a folder of one kind")
    p.add_argument(
        "--out",
        required=True,
        metavar="STORE",
        help="the digest store's folder (a PackedDigestStore, created if needed; with --store folder a DigestStore)",
    )
    p.add_argument("--format", choices=("jsonl", "parquet", "text"), help="default: from the file names")
    p.add_argument("--text-field", default="text", help="the JSON field or Parquet column of the text (default: text)")
    p.add_argument("--id-field", default="id", help="the field or column of a document's id (default: id)")
    p.add_argument("--chunk-tokens", type=int, metavar="N", help="tokens per chunk (default: the compressor's window)")
    p.add_argument("--shard-size", type=int, default=64, metavar="N", help="documents per shard (default: 64)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="Ray actors; more than 1 means --ray")
    p.add_argument("--ray", action="store_true", help="run on Ray Data (RAY_ADDRESS joins a running cluster)")
    p.add_argument("--store", choices=("packed", "folder"), default="packed", help="the store's format")
    p.add_argument("--store-dtype", choices=("bf16", "int8", "fp8"), default="bf16", help="packed store's vectors")
    add_json_option(p)


def run_index(args: argparse.Namespace) -> int:
    from .. import indexing

    indexing.resolve_source(args.source, args.format)  # a missing or unknown source is said before the models load
    use_ray = args.ray or args.workers > 1
    if use_ray:
        indexing.require_ray()  # ImportError (status 1) with the install command
    out_dir = Path(args.out).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out {args.out} exists and is not a directory")
    check_writable(out_dir, "--out")
    options = ModelOptions.from_args(args)
    if use_ray and options.device is None:
        # The driver's copy is only what the actors get: each GPU actor moves its own to its GPU.
        options = dataclasses.replace(options, device="cpu")
    models = loading.load_models(options)
    if args.store == "folder":
        from ..store import DigestStore

        store: Any = DigestStore(out_dir)
    else:
        store = out_dir
    result = indexing.index_documents(
        args.source,
        store,
        compressor=models.compressor,
        format=args.format,
        text_field=args.text_field,
        id_field=args.id_field or None,
        chunk_tokens=args.chunk_tokens,
        shard_size=args.shard_size,
        workers=args.workers,
        use_ray=use_ray,
        store_dtype=args.store_dtype,
    )
    if args.json:
        emit_json(
            {
                "command": "index",
                **result.to_dict(),
                "llm": loading.llm_report(models),
                "compressor": loading.compressor_report(models),
            }
        )
        return EXIT_OK
    where = f"on Ray, {result.workers} workers" if result.ray else "in one process"
    print(
        f"indexed {result.documents:,} documents ({result.chunks:,} chunks, {result.written:,} new digests) in "
        f"{result.seconds:.1f} s {where}; {result.skipped} of {result.shards} shards were done already"
    )
    print(f"digests in {out_dir}/, chunk lists in {out_dir}/{indexing.INDEX_DIR}/chunks/ (indexing.read_chunks)")
    if not models.trained:
        print("(untrained compressor: these digests are noise)")
    return EXIT_OK
