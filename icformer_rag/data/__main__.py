"""``python -m icformer_rag.data build --out DIR``: corpus shards, QA dev set and instruction records.

Also ``python -m icformer_rag.data sources`` lists the registered sources.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .corpus import CorpusConfig, prepare_documents, write_corpus
from .instruct import InstructConfig, build_instruct_train, build_qa_dev, tokenizer_counter
from .sources import DEFAULT_SOURCES, SOURCES, SourceError, get_sources


def _load_tokenizer(name_or_path: str | None) -> Any:
    """``--tokenizer`` if given, else the default LLM's tokenizer from ``icformer_rag.llm``."""
    if name_or_path:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name_or_path)
    try:
        from icformer_rag.llm import load_default_tokenizer
    except ImportError as e:  # the LLM module is optional for the data package
        raise SystemExit(f"no default tokenizer available ({e}); pass --tokenizer PATH_OR_NAME") from e
    return load_default_tokenizer()


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _build(args: argparse.Namespace) -> int:
    started = time.time()
    names = tuple(s.strip() for s in args.sources.split(",") if s.strip())
    config = CorpusConfig(
        sources=names,
        cache_dir=args.cache_dir,
        seed=args.seed,
        heldout_fraction=args.heldout_fraction,
        window_tokens=args.window_tokens,
        max_tokens_per_source=args.max_tokens_per_source or None,
        max_train_tokens=args.max_train_tokens or None,
    )
    sources = get_sources(config.sources)
    tokenizer = _load_tokenizer(args.tokenizer)
    cache = config.resolved_cache_dir()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    print(f"fetching {', '.join(names)} into {cache}", file=sys.stderr)
    infos = [{**s.describe(cache), "description": s.description} for s in sources]
    prepared = prepare_documents((d for s in sources for d in s.documents(cache)), config)
    manifest = write_corpus(out, prepared, tokenizer, config, infos, progress=not args.quiet)

    count = tokenizer_counter(tokenizer)
    instruct_config = InstructConfig(seed=args.seed, max_records=args.max_instruct_records)
    dev = build_qa_dev(
        prepared.heldout,
        out / "qa_dev.jsonl",
        InstructConfig(seed=args.seed, max_records=args.max_dev_records),
        count,
    )
    train = build_instruct_train(
        prepared.train, out / "instruct_train.jsonl", instruct_config, count, progress=not args.quiet
    )

    itemsize = 2 if manifest.dtype == "uint16" else 4
    rows = [
        [
            "source",
            "train docs",
            "train windows",
            "train tokens",
            "MB",
            "heldout docs",
            "heldout tokens",
            "dropped docs",
        ]
    ]
    for name in [*names, "total"]:
        tr = manifest.counts["train"].get(name, {})
        he = manifest.counts["heldout"].get(name, {})
        if name == "total":
            dropped = sum(v for d in manifest.dropped.values() for k, v in d.items() if k.endswith("_docs"))
        else:
            dropped = sum(v for k, v in manifest.dropped.get(name, {}).items() if k.endswith("_docs"))
        tokens = tr.get("tokens", 0)
        rows.append([
            name, f"{tr.get('docs', 0):,}", f"{tr.get('windows', 0):,}", f"{tokens:,}",
            f"{(tokens + he.get('tokens', 0)) * itemsize / 1e6:.1f}", f"{he.get('docs', 0):,}",
            f"{he.get('tokens', 0):,}", f"{dropped:,}",
        ])  # fmt: skip
    print(_table(rows))
    kinds: dict[str, int] = {}
    for r in train:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    print(f"\nqa_dev.jsonl: {len(dev):,} questions from held-out documents")
    by_kind = ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items()))
    print(f"instruct_train.jsonl: {len(train):,} records ({by_kind});")
    print(f"  {sum(r.answer is None for r in train):,} without an answer, to be filled by distill()")
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"\nwrote {out} ({size / 1e6:.1f} MB) in {time.time() - started:.0f} s")
    return 0


def _list_sources(args: argparse.Namespace) -> int:
    for name, source in SOURCES.items():
        print(f"{name:12s} {source.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m icformer_rag.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser(
        "build", help="fetch sources, write corpus shards, qa_dev.jsonl, instruct_train.jsonl"
    )
    build.add_argument("--out", required=True, help="output directory")
    build.add_argument(
        "--sources", default=",".join(DEFAULT_SOURCES), help=f"comma-separated, from: {', '.join(SOURCES)}"
    )
    build.add_argument(
        "--tokenizer", default=None, help="tokenizer folder or name (default: the default LLM's)"
    )
    build.add_argument(
        "--cache-dir", default=None, help="download cache (default ~/.cache/icformer_rag/sources)"
    )
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--heldout-fraction", type=float, default=CorpusConfig.heldout_fraction)
    build.add_argument("--window-tokens", type=int, default=CorpusConfig.window_tokens)
    build.add_argument(
        "--max-train-tokens", type=int, default=CorpusConfig.max_train_tokens, help="0 = no cap"
    )
    build.add_argument(
        "--max-tokens-per-source", type=int, default=CorpusConfig.max_tokens_per_source, help="0 = no cap"
    )
    build.add_argument("--max-instruct-records", type=int, default=InstructConfig.max_records)
    build.add_argument("--max-dev-records", type=int, default=1000)
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(func=_build)
    sub.add_parser("sources", help="list the registered sources").set_defaults(func=_list_sources)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (SourceError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
