"""Documents as files: the listing of a folder (sorted, recursive, hidden files left out) and the reading of a text
file (UTF-8, BOM dropped, an empty file refused), shared by the command line and :mod:`icformer_rag.indexing`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".md")


class InputError(ValueError):
    """An input path that gives no document: missing, a folder without such files, not UTF-8 text, empty."""


def expand_paths(paths: Sequence[str | Path], suffixes: Sequence[str] = TEXT_SUFFIXES) -> list[Path]:
    """Files named directly, plus the files with `suffixes` under each directory (recursively, sorted).

    Raises InputError for a path that does not exist or a directory with no such file.
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
                raise InputError(f"no {' or '.join(suffixes)} files in directory {raw}")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"no such file or directory: {raw}")
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
        raise InputError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from err
    if not text.strip():
        raise InputError(f"{path} is empty: there is nothing to read in it")
    return text
