"""`icformer-rag data` (also `python -m icformer_rag.data`): the training corpus and QA sets.

`data build --out DIR`: corpus shards, QA dev set and instruction records. `data distill --data-dir DIR` fills the
instruction records that have no answer (summaries, keywords) with the frozen LLM's own full-text answers
(self-distillation), into a new file. `data counterfactual --corpus DIR --out FILE` writes counterfactual QA records
(training passages with invented facts; see icformer_rag/data/counterfactual.py). `data sources` lists the sources.
A source that cannot be read or a bad value prints `error: ...` and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import SubParsers, add_command
from .options import add_model_options

if TYPE_CHECKING:
    from ..data.instruct import InstructConfig


def run_data(args: argparse.Namespace) -> int:
    from ..data.sources import SourceError

    try:
        return int(args.data_func(args))
    except (SourceError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def register_data(subparsers: SubParsers) -> None:
    from ..data.corpus import CorpusConfig
    from ..data.instruct import InstructConfig
    from ..data.sources import DEFAULT_SOURCES, SOURCES

    parser = add_command(
        subparsers,
        "data",
        run_data,
        models=False,
        help="build the training corpus and QA sets from offline sources (also python -m icformer_rag.data)",
        description=__doc__,
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    build = sub.add_parser("build", help="fetch sources, write corpus shards, qa_dev.jsonl, instruct_train.jsonl")
    build.add_argument("--out", required=True, help="output directory")
    build.add_argument(
        "--sources", default=",".join(DEFAULT_SOURCES), help=f"comma-separated, from: {', '.join(SOURCES)}"
    )
    build.add_argument("--tokenizer", default=None, help="tokenizer folder or name (default: the default LLM's)")
    build.add_argument("--cache-dir", default=None, help="download cache (default ~/.cache/icformer_rag/sources)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--heldout-fraction", type=float, default=CorpusConfig.heldout_fraction)
    build.add_argument("--window-tokens", type=int, default=CorpusConfig.window_tokens)
    build.add_argument("--max-train-tokens", type=int, default=CorpusConfig.max_train_tokens, help="0 = no cap")
    build.add_argument(
        "--max-tokens-per-source", type=int, default=CorpusConfig.max_tokens_per_source, help="0 = no cap"
    )
    build.add_argument(
        "--max-instruct-records", type=int, default=InstructConfig.max_records, help="training records; 0 = no cap"
    )
    build.add_argument(
        "--passages-per-doc",
        type=int,
        default=InstructConfig.passages_per_doc,
        help="training records: passages used per document (the QA dev set keeps the default)",
    )
    build.add_argument(
        "--questions-per-passage",
        type=int,
        default=InstructConfig.questions_per_passage,
        help="training records: extractive questions per passage (the QA dev set keeps the default)",
    )
    build.add_argument("--max-dev-records", type=int, default=1000)
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(data_func=_build)
    dist = sub.add_parser(
        "distill", help="fill unanswered instruction records with the LLM's own full-text answers (new file)"
    )
    dist.add_argument("--data-dir", default=".data/corpus", help="corpus directory (default .data/corpus)")
    dist.add_argument("--input", default=None, help="records to fill (default DATA_DIR/instruct_train.jsonl)")
    dist.add_argument("--out", default=None, help="output file (default INPUT's name + .distilled.jsonl)")
    add_model_options(dist, checkpoint=None)
    dist.add_argument("--batch-size", type=int, default=32)
    dist.add_argument("--max-new-tokens", type=int, default=96)
    dist.add_argument("--limit", type=int, default=0, help="distill only the first N unanswered records (0 = all)")
    dist.add_argument("--quiet", action="store_true", help="no progress bar")
    dist.set_defaults(data_func=_distill)
    cf = sub.add_parser(
        "counterfactual", help="QA records on training passages whose names, numbers and dates are invented"
    )
    cf.add_argument("--corpus", default=".data/corpus", help="corpus directory (its manifest and docs.jsonl)")
    cf.add_argument("--out", default=".data/cf_train.jsonl", help="output JSON-lines file")
    cf.add_argument("--max-records", type=int, default=120_000, help="0 = as many as the documents give")
    cf.add_argument("--seed", type=int, default=0)
    cf.add_argument("--tokenizer", default=None, help="tokenizer for passage lengths (default: the default LLM's)")
    cf.add_argument("--cache-dir", default=None, help="download cache (default ~/.cache/icformer_rag/sources)")
    cf.add_argument("--evalsets", default="evalsets", help="folder whose names the generator never emits")
    cf.add_argument(
        "--length-mix",
        type=_length_mix,
        default=None,
        metavar="LO-HI:SHARE,...",
        help="passage length buckets in tokens and their target shares (ascending, shares summing to 1), e.g. "
        "60-256:0.2,257-512:0.25,513-1024:0.3,1025-1500:0.25; default: the built-in mix, "
        "icformer_rag.data.counterfactual.BUCKETS (the records of docs/training.md)",
    )
    cf.add_argument(
        "--number-share",
        type=float,
        default=None,
        metavar="SHARE",
        help="cap number questions (count, year, amount, date) at this share of all records, and prefer name "
        "questions (who, where, which) in passages with more questions than the per-passage limit (default: no cap)",
    )
    cf.add_argument(
        "--strict-mix",
        action="store_true",
        help="drop passages whose length bucket already holds its share (the mix is met; fewer records)",
    )
    cf.add_argument("--quiet", action="store_true", help="no progress bar")
    cf.set_defaults(data_func=_counterfactual)
    sub.add_parser("sources", help="list the registered sources").set_defaults(data_func=_list_sources)


def _load_tokenizer(name_or_path: str | None) -> Any:
    """``--tokenizer`` if given, else the default LLM's tokenizer from ``icformer_rag.llm``."""
    if name_or_path:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name_or_path)
    try:
        from ..llm import load_default_tokenizer
    except ImportError as e:  # the LLM module is optional for the data package
        raise SystemExit(f"no default tokenizer available ({e}); pass --tokenizer PATH_OR_NAME") from e
    return load_default_tokenizer()


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def instruct_config_from_args(args: argparse.Namespace) -> InstructConfig:
    """The training records' config from `data build`'s flags.

    Only the training records take --passages-per-doc / --questions-per-passage: the QA dev set keeps the
    defaults, so dev sets built with different flags stay comparable.
    """
    from ..data.instruct import InstructConfig

    return InstructConfig(
        seed=args.seed,
        max_records=args.max_instruct_records or None,
        passages_per_doc=args.passages_per_doc,
        questions_per_passage=args.questions_per_passage,
    )


def _build(args: argparse.Namespace) -> int:
    from ..data.corpus import CorpusConfig, prepare_documents, write_corpus
    from ..data.instruct import InstructConfig, build_instruct_train, build_qa_dev, tokenizer_counter
    from ..data.sources import get_sources

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
    instruct_config = instruct_config_from_args(args)
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


def _distill(args: argparse.Namespace) -> int:
    """Self-distillation: the LLM answers each unanswered record with the full context text in its prompt
    (the same chat layout as the full-text baseline at inference), greedy; those answers become targets."""
    from ..data.instruct import distill, read_records, write_records
    from ..generation import GenerationSettings, SoftPromptLM
    from ..llm import load_llm

    source = Path(args.input or Path(args.data_dir) / "instruct_train.jsonl")
    target = Path(args.out or source.with_name(source.stem + ".distilled.jsonl"))
    if not source.is_file():
        raise ValueError(f"{source} not found: build the corpus first (`python -m icformer_rag.data build`)")
    if target.resolve() == source.resolve():
        raise ValueError("--out must differ from the input: distill writes a new file and keeps the original")
    records = read_records(source)
    todo = [r for r in records if r.answer is None][: args.limit or None]
    keep = [r for r in records if r.answer is not None]
    llm, tokenizer = load_llm(args.llm, device=args.device, dtype=args.dtype)
    lm = SoftPromptLM(llm, tokenizer)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)

    def generate(contexts: list[str], prompts: list[str]) -> list[str]:
        return lm.generate_batch(prompts, [[c] for c in contexts], settings)

    started = time.time()
    filled = distill(todo, generate, batch_size=args.batch_size, progress=not args.quiet)
    # Answered records first, in their order, then the distilled ones: the trainer draws records at random.
    written = write_records(target, [*keep, *filled])
    print(
        f"{target}: {written:,} records ({len(keep):,} with gold answers, {len(filled):,} distilled, "
        f"{len(todo) - len(filled):,} dropped for an empty answer, "
        f"{sum(r.answer is None for r in records) - len(todo):,} left out by --limit) in {time.time() - started:.0f} s"
    )
    return 0


def _length_mix(text: str) -> Any:
    """argparse type of ``--length-mix``: the buckets, or an argparse error naming what is wrong."""
    from ..data.counterfactual import parse_length_mix

    try:
        return parse_length_mix(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _counterfactual(args: argparse.Namespace) -> int:
    """Counterfactual records from the corpus's training documents, and their counts."""
    from ..data.counterfactual import BUCKETS, CfConfig, build_counterfactual, summary
    from ..data.instruct import tokenizer_counter

    started = time.time()
    # A bad value raises ValueError: main prints it as one `error: ...` line (status 2), before any loading.
    config = CfConfig(
        seed=args.seed,
        max_records=args.max_records or None,
        number_share=args.number_share,
        strict_mix=args.strict_mix,
        buckets=args.length_mix or BUCKETS,
    )
    count = tokenizer_counter(_load_tokenizer(args.tokenizer))  # after the config: a bad value fails at once
    records = build_counterfactual(
        args.corpus, args.out, config, count, args.evalsets, args.cache_dir, progress=not args.quiet
    )
    counts = summary(records, config.buckets)
    n = len(records)
    multi = sum(len(r.contexts) > 1 for r in records)
    print(f"{args.out}: {n:,} records, {multi:,} multi-document ({multi / max(n, 1):.1%})")
    for name, counter in counts.items():
        print(f"  per {name}: " + ", ".join(f"{k} {v:,} ({v / max(n, 1):.1%})" for k, v in sorted(counter.items())))
    print(f"  {Path(args.out).stat().st_size / 1e6:.1f} MB in {time.time() - started:.0f} s")
    return 0


def _list_sources(args: argparse.Namespace) -> int:
    from ..data.sources import SOURCES

    for name, source in SOURCES.items():
        print(f"{name:12s} {source.description}")
    return 0
