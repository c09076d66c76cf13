"""What every command shares: exit statuses, the one-line errors, `add_command`, `--json`, and the input files
(text files, directories, digest files) that `ask` and `compress` read."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# The input files, re-exported for the commands (the listing and reading are the library's, icformer_rag.files).
from ..files import TEXT_SUFFIXES as TEXT_SUFFIXES
from ..files import InputError
from ..files import expand_paths as expand_paths
from ..files import read_text as read_text
from .options import add_model_options

SAMPLES_DIR = Path(__file__).parents[1] / "samples"
DIGEST_SUFFIX = ".digest.safetensors"
DEFAULT_MAX_NEW_TOKENS = 96

EXIT_OK = 0
EXIT_ENVIRONMENT = 1  # a package or file the install needs is missing
EXIT_USAGE = 2  # bad input: the user can fix the command line

Handler = Callable[[argparse.Namespace], int]
SubParsers = Any  # argparse's _SubParsersAction, which it does not export


# A problem with the command line or its input files: printed as one line, exit status 2. The library's InputError
# (a path that gives no document) is one.
CLIError = InputError


# ------------------------------------------------------------------------------------------- parser
def add_command(
    subparsers: SubParsers, name: str, handler: Handler, *, help: str, models: bool = True, description: str = ""
) -> argparse.ArgumentParser:
    """Add subcommand `name`, run by `handler(args) -> exit status`; `models` adds the model options
    (:func:`icformer_rag.cli.options.add_model_options`)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help, description=description or help)
    if models:
        add_model_options(parser)
    parser.set_defaults(handler=handler)
    return parser


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document on stdout instead of the human output (warnings still go to stderr)",
    )


def emit_json(document: dict[str, Any]) -> None:
    """The `--json` output: one JSON document on stdout."""
    print(json.dumps(document, indent=2))  # ASCII: any locale's stdout takes it


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for n, row in enumerate((header, *rows)):
        if n == len(rows):  # the total row
            print("  ".join("-" * w for w in widths))
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells).rstrip())


# ------------------------------------------------------------------------------------------- errors
def error_message(err: BaseException) -> str:
    """The one-line text of `err` for `error: ...`."""
    if isinstance(err, OSError) and err.strerror:
        if err.filename is None and stdout_broken():
            return f"cannot write to standard output: {err.strerror}"
        where = f": {err.filename}" if err.filename is not None else ""
        return f"{err.strerror}{where}"
    message = " ".join(str(err).split())
    if isinstance(err, (CLIError, ValueError, TypeError, OSError)):
        return message or type(err).__name__
    # An exception the CLI did not expect: its type is half the message.
    hint = "" if os.environ.get("ICFORMER_RAG_DEBUG") else " (ICFORMER_RAG_DEBUG=1 shows the traceback)"
    return f"{type(err).__name__}: {message}{hint}" if message else f"{type(err).__name__}{hint}"


def print_error(err: BaseException) -> None:
    print(f"error: {error_message(err)}", file=sys.stderr)


def stdout_broken() -> bool:
    """Whether standard output cannot take what was printed (a full disk, a closed pipe); if so, it is pointed at
    os.devnull, so that the interpreter's own flush at exit does not fail again with a traceback."""
    try:
        sys.stdout.flush()
        return False
    except OSError:
        silence_stdout()
        return True


def silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor (an in-process capture): nothing to do
        pass


def io_reason(err: BaseException) -> str:
    """What went wrong in an I/O error, as the OS says it ("No space left on device"), from an OSError or from
    safetensors' own error ("Error while serializing: I/O error: No space left on device (os error 28) at ...")."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = " ".join(str(err).split())
    text = text.split("I/O error: ", 1)[-1]
    return text.split(" (os error", 1)[0].split(" at path ", 1)[0] or type(err).__name__


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
        raise CLIError(f"cannot write in {option} {folder}: {io_reason(err)}") from err


def is_digest_file(path: Path) -> bool:
    return path.name.lower().endswith(DIGEST_SUFFIX)


def sample_files() -> list[Path]:
    """The sample documents shipped with the package."""
    return expand_paths([SAMPLES_DIR])


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
    from ..digest import Digest

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
