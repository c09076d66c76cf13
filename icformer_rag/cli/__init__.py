"""The `icformer-rag` command line (also `python -m icformer_rag`).

One module per command group, each with a `register_<name>(subparsers)` function that adds its parser with
:func:`~icformer_rag.cli.common.add_command` and names the function that runs it: :mod:`.ask`, :mod:`.compress`,
:mod:`.index`, :mod:`.info`, :mod:`.data`, :mod:`.train`, :mod:`.eval`, :mod:`.bench`. :data:`COMMANDS` lists them
in help order. To add one (say `hello`), write `register_hello` and `run_hello(args) -> int` and append it to
COMMANDS. The model options (`--llm`, `--checkpoint`, `--device`, `--dtype`) are defined once, in :mod:`.options`;
a command reads them into a :class:`~icformer_rag.cli.options.ModelOptions` and calls the library with typed
arguments (the library never sees an argparse Namespace).

Every failure prints one line, `error: ...`, on stderr and exits with status 2: bad input (a missing, empty,
non-UTF-8 or corrupt file, a checkpoint that does not load), a disk that is full or read-only, an unexpected
exception (its type named; ICFORMER_RAG_DEBUG=1 adds the traceback). A missing package exits with status 1.
`ask`, `compress` and `info` take `--json`: one JSON document on stdout in place of the human output.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from .. import __version__
from .ask import register_ask
from .bench import register_bench
from .common import (
    DIGEST_SUFFIX,
    EXIT_ENVIRONMENT,
    EXIT_OK,
    EXIT_USAGE,
    SAMPLES_DIR,
    CLIError,
    SubParsers,
    add_command,
    error_message,
    expand_paths,
    print_error,
    sample_files,
    silence_stdout,
    stdout_broken,
)
from .compress import register_compress
from .data import register_data
from .eval import register_eval
from .index import register_index
from .info import register_info
from .loading import Models, clear_cache, load_models
from .options import ModelOptions, add_model_options
from .train import register_train

__all__ = [
    "COMMANDS",
    "DIGEST_SUFFIX",
    "EXIT_ENVIRONMENT",
    "EXIT_OK",
    "EXIT_USAGE",
    "SAMPLES_DIR",
    "CLIError",
    "ModelOptions",
    "Models",
    "add_command",
    "add_model_options",
    "build_parser",
    "clear_cache",
    "error_message",
    "expand_paths",
    "load_models",
    "main",
    "register_ask",
    "register_bench",
    "register_compress",
    "register_data",
    "register_eval",
    "register_index",
    "register_info",
    "register_train",
    "sample_files",
]

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
        if stdout_broken():
            print("error: cannot write to standard output", file=sys.stderr)
            return EXIT_USAGE
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        status: int = args.handler(args)
        sys.stdout.flush()  # a full disk under a redirected stdout shows here, not at exit
        return status
    except ImportError as err:
        print_error(err)
        return EXIT_ENVIRONMENT
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # `icformer-rag info | head -1`: the reader left; nothing to say
        silence_stdout()
        return EXIT_USAGE
    except Exception as err:
        if not isinstance(err, (CLIError, ValueError, TypeError, OSError)) and os.environ.get("ICFORMER_RAG_DEBUG"):
            traceback.print_exc()
        print_error(err)
        return EXIT_USAGE
