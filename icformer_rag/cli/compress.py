"""`icformer-rag compress`: text files into digest files (a DigestStore folder)."""

from __future__ import annotations

import argparse
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from . import loading
from .common import (
    DIGEST_SUFFIX,
    EXIT_OK,
    CLIError,
    SubParsers,
    add_command,
    add_json_option,
    check_writable,
    emit_json,
    expand_paths,
    io_reason,
    print_table,
    read_text,
)
from .options import ModelOptions


def register_compress(subparsers: SubParsers) -> None:
    p = add_command(
        subparsers,
        "compress",
        run_compress,
        help="compress text files into digest files",
        description="Compress text files (UTF-8; directories give their .txt and .md files, sorted) in one "
        f"batched call and save one <stem>{DIGEST_SUFFIX} per file.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="text files or directories")
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="folder for the digest files (created if needed); it is also a DigestStore folder: each digest is "
        f"saved as <key>{DIGEST_SUFFIX}, the store's name for it, and <stem>{DIGEST_SUFFIX} is a link to it",
    )
    add_json_option(p)


def run_compress(args: argparse.Namespace) -> int:
    files = expand_paths(args.files)
    out_dir = Path(args.out).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out {args.out} exists and is not a directory")
    targets = [out_dir / f"{path.stem}{DIGEST_SUFFIX}" for path in files]
    clashes = {t.name for t in targets if targets.count(t) > 1}
    if clashes:
        raise CLIError(f"several inputs would be saved as {', '.join(sorted(clashes))}: rename one of them")
    texts = [read_text(path) for path in files]
    check_writable(out_dir, "--out")  # a read-only or full disk is found before the models load

    options = ModelOptions.from_args(args)
    models = loading.load_models(options)
    start = time.perf_counter()
    digests = models.compressor.compress(texts, show_progress=True)
    seconds = time.perf_counter() - start
    store_files = save_digests(out_dir, digests, targets)

    tokens, vectors = sum(d.num_tokens for d in digests), sum(len(d) for d in digests)
    if args.json:
        emit_json(
            {
                "command": "compress",
                "out": str(out_dir),
                "files": [
                    {
                        "file": str(path),
                        "tokens": d.num_tokens,
                        "digests": len(d),
                        "ratio": round(d.compression, 3),
                        "key": store_file.name.removesuffix(DIGEST_SUFFIX),
                        "digest_file": str(target),
                        "store_file": str(store_file),
                    }
                    for path, d, target, store_file in zip(files, digests, targets, store_files, strict=True)
                ],
                "total": {
                    "files": len(files),
                    "tokens": tokens,
                    "digests": vectors,
                    "ratio": round(tokens / max(1, vectors), 3),
                },
                "seconds": round(seconds, 4),
                "tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
                "llm": loading.llm_report(models),
                "compressor": loading.compressor_report(models),
            }
        )
        return EXIT_OK
    rows = [
        (str(path), f"{d.num_tokens:,}", f"{len(d):,}", f"{d.compression:.1f}x")
        for path, d in zip(files, digests, strict=True)
    ]
    rows.append(("total", f"{tokens:,}", f"{vectors:,}", f"{tokens / max(1, vectors):.1f}x"))
    print_table(("file", "tokens", "digests", "ratio"), rows)
    print(f"compressed {len(files)} file(s) in {seconds:.2f} s ({tokens / max(seconds, 1e-9):,.0f} tokens/s)")
    print(
        f"digests written to {out_dir}/ as <name>{DIGEST_SUFFIX}, each a link to <key>{DIGEST_SUFFIX}: "
        f"DigestStore({str(out_dir)!r}) reads them"
    )
    if not models.trained:
        print("(untrained compressor: these digests are noise)")
    return EXIT_OK


def save_digests(out_dir: Path, digests: Sequence[Any], targets: Sequence[Path]) -> list[Path]:
    """Save each digest as ``DigestStore(out_dir)`` stores it, ``<key>.digest.safetensors`` (atomically, through
    the store), with ``<stem>.digest.safetensors`` a hard link to it (a copy where links are not supported).
    Returns the store files. CLIError (with how many were written) for a read-only or full disk."""
    from safetensors import SafetensorError

    from ..store import DigestStore, digest_key

    store = DigestStore(out_dir)
    keys = [digest_key(d) for d in digests]
    store_files = [cast(Path, store.path_for(key)) for key in keys]  # a store with a folder: never None
    for target, key in zip(targets, keys, strict=True):
        other = next((k for k, f in zip(keys, store_files, strict=True) if f == target and k != key), None)
        if other is not None:  # an input named after another digest's key would overwrite that digest
            raise CLIError(f"{target.name} is the store's name of another digest in this call: rename that input")
    for n, (digest, target, store_file) in enumerate(zip(digests, targets, store_files, strict=True)):
        try:
            store.put(digest)
            if target != store_file:
                _link(store_file, target)
        except (OSError, SafetensorError) as err:  # safetensors reports a failed write in its own type
            raise CLIError(
                f"cannot write the digests to {out_dir}: {io_reason(err)} ({n} of {len(targets)} written)"
            ) from err
    return store_files


def _link(source: Path, target: Path) -> None:
    """Make `target` the same file as `source` (replacing it atomically)."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        try:
            os.link(source, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
