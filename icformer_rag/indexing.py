"""Indexing a corpus into a digest store: read, chunk, compress, write; in one process or on Ray Data (issue 17).

:func:`index_documents` (and ``icformer-rag index``) reads documents from a JSONL file (one JSON object a line, its
text under `text_field`), a Parquet file (a string column `text_field`; needs pyarrow), a folder of such files, or a
folder of ``.txt`` / ``.md`` files; cuts each document into chunks of the compressor's window (`chunk_tokens`
tokens, cut at token boundaries of the document's own tokenization, nothing dropped); compresses every chunk into a
digest and writes it to a :class:`~icformer_rag.packed_store.PackedDigestStore` (the default) or a
:class:`~icformer_rag.store.DigestStore`, under the store's own key (the chunk's text hash and the compressor's
fingerprint: the key a retriever computes for the same chunk text at query time).

**Shards.** The input is planned into shards of `shard_size` consecutive documents (a shard never spans two files),
each named by the sha256 of its documents' ids and texts. A shard is the unit of work: one worker reads it, chunks it
and compresses all of its distinct chunk texts in one batched call (those the store holds too: a shard's batches,
hence its digests to the last bit, depend on its contents only), and the driver commits it: the digests whose key
the store does not hold yet (one digest per (text, compressor): a text repeated anywhere in the corpus, or already
indexed by an earlier run, is written once), the shard's chunk list (``indexing/chunks/<shard>.jsonl``: document id,
chunk number, key and text of every chunk, for the retriever's side), then one line in ``indexing/manifest.jsonl``.

**Resuming.** A rerun (after a crash, a kill, or with documents added) skips every shard the manifest lists as
finished for the same compressor and chunking, without compressing it again (planning still reads every document
once, to name the shards); a shard cut off mid-commit is redone, and the digests it had written are not written twice.

In one process the next shard is compressed while the last one is written (one writer thread, shards in order).

**Ray.** With ``use_ray=True`` (or ``workers > 1``) shard descriptors go through ``ray.data.from_items(...)
.map_batches(...)`` over `workers` actors, each holding one copy of the compressor (on a GPU when the cluster has
them: ``num_gpus=1`` each), which read their shards from the source (the source must be readable from every node);
results come back to the driver in shard order, the one writer of the store. Digests are bit-identical to the
single-process path: each shard is compressed in the same batches by the same code either way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tqdm.auto import tqdm

from .digest import Digest, InvalidDigestError
from .store import DigestStore, digest_key, key_for
from .windows import split_windows

if TYPE_CHECKING:
    from .compressor import ContextCompressor
    from .packed_store import PackedDigestStore

__all__ = [
    "FORMATS",
    "IndexResult",
    "ShardResult",
    "ShardSpec",
    "chunk_texts",
    "index_documents",
    "plan_shards",
    "read_chunks",
    "read_shard",
    "require_ray",
    "resolve_source",
]

FORMATS = ("jsonl", "parquet", "text")
_SUFFIXES = {
    "jsonl": (".jsonl", ".ndjson"),
    "parquet": (".parquet", ".pq"),
    "text": (".txt", ".md"),
}
INDEX_DIR = "indexing"  # inside the store's folder: manifest.jsonl and chunks/
RAY_HINT = "pip install 'icformer-rag[ray]' (or: pip install 'ray[data]')"


# ------------------------------------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class ShardSpec:
    """Where a shard's documents are: `path` (a file, or the root folder of text files) and, for JSONL, the byte
    range [start, stop) (`first` is the line number of its first line); for Parquet the row range [start, stop);
    for text files the `files` under `path`. `sha` names its contents (see the module docstring)."""

    format: str
    path: str
    sha: str
    docs: int
    start: int = 0
    stop: int = 0
    first: int = 0
    files: tuple[str, ...] = ()
    name: str = ""  # the file's name under the source root, in default document ids

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ShardSpec:
        data = json.loads(text)
        data["files"] = tuple(data["files"])
        return cls(**data)


@dataclass(frozen=True)
class _Fields:
    text_field: str = "text"
    id_field: str | None = "id"


def resolve_source(source: str | Path, format: str | None = None) -> tuple[str, Path, list[Path]]:
    """The format, root and files of `source`: a .jsonl/.ndjson, .parquet/.pq, .txt/.md file, or a folder of one
    kind of them (recursively, sorted, hidden files left out). `format` forces one of :data:`FORMATS`.

    Raises FileNotFoundError for a missing source or a folder with no such files, ValueError for an unknown format
    or a folder that mixes formats (pass `format`)."""
    path = Path(source).expanduser()
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown document format {format!r}: expected one of {', '.join(FORMATS)}")
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {source}")
    if path.is_file():
        kind = format or next((k for k, suf in _SUFFIXES.items() if path.name.lower().endswith(suf)), None)
        if kind is None:
            raise ValueError(
                f"unknown document format of {source}: name it .jsonl, .parquet, .txt or .md, or pass a format "
                f"({', '.join(FORMATS)})"
            )
        return kind, path.parent, [path]
    from .files import InputError, expand_paths  # the CLI's listing: sorted, recursive, hidden files left out

    found: dict[str, list[Path]] = {}
    for kind in [format] if format else FORMATS:
        try:
            found[kind] = expand_paths([path], _SUFFIXES[kind])
        except InputError:  # none of this kind
            pass
    if format is None:
        if len(found) > 1:
            raise ValueError(f"{source} holds {' and '.join(sorted(found))} files: pass the format to index")
        format = next(iter(found), None)
    if format is None or not found.get(format):
        what = " or ".join(s for k in ([format] if format else FORMATS) for s in _SUFFIXES[k])
        raise FileNotFoundError(f"no {what} files in directory {source}")
    return format, path, found[format]


def _doc_id(value: Any, default: str) -> str:
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else default


def _checked(text: Any, where: str, fields: _Fields) -> str:
    if not isinstance(text, str):
        raise ValueError(f"{where}: no string field {fields.text_field!r} (got {type(text).__name__})")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"{where}: the text is not valid Unicode ({err.reason} at character {err.start})") from err
    return text


def _jsonl_docs(
    path: Path, name: str, fields: _Fields, start: int = 0, stop: int | None = None, first: int = 0
) -> Iterator[tuple[int, int, str, str]]:
    """(byte offset after the line, line number, id, text) of each non-blank line of a JSONL file in [start, stop)."""
    with open(path, "rb") as f:
        f.seek(start)
        at, lineno = start, first
        while stop is None or at < stop:
            raw = f.readline()
            if not raw:
                break
            at += len(raw)
            lineno += 1
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(raw)
            except ValueError as err:
                raise ValueError(f"{where}: not a JSON line ({err})") from err
            if not isinstance(row, dict):
                raise ValueError(f"{where}: a JSON line must be an object with a {fields.text_field!r} field")
            text = _checked(row.get(fields.text_field), where, fields)
            yield at, lineno, _doc_id(row.get(fields.id_field) if fields.id_field else None, f"{name}:{lineno}"), text


def _parquet_file(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(f"reading Parquet needs pyarrow: pip install pyarrow ({RAY_HINT} installs it)") from err
    return pq.ParquetFile(path)


def _parquet_docs(
    path: Path, name: str, fields: _Fields, start: int = 0, stop: int | None = None
) -> Iterator[tuple[int, str, str]]:
    """(row, id, text) of the rows [start, stop) of a Parquet file, reading only the row groups they are in."""
    pf = _parquet_file(path)
    columns = pf.schema_arrow.names
    if fields.text_field not in columns:
        raise ValueError(f"{path}: no column {fields.text_field!r} (columns: {', '.join(columns)})")
    wanted = [fields.text_field] + ([fields.id_field] if fields.id_field in columns else [])
    stop = pf.metadata.num_rows if stop is None else stop
    groups, row0, at = [], None, 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if at + n > start and at < stop:
            groups.append(g)
            row0 = at if row0 is None else row0
        at += n
    if not groups or row0 is None:
        return
    row = row0
    for batch in pf.iter_batches(columns=wanted, row_groups=groups):
        data = batch.to_pydict()
        ids = data.get(fields.id_field) if fields.id_field in wanted[1:] else None
        for i, text in enumerate(data[fields.text_field]):
            if start <= row < stop:
                where = f"{path} row {row}"
                yield row, _doc_id(ids[i] if ids else None, f"{name}:{row}"), _checked(text, where, fields)
            row += 1


def _text_doc(root: Path, rel: str) -> tuple[str, str]:
    from .files import read_text  # as `compress` reads a file: UTF-8 (BOM dropped), an empty file refused

    return rel, read_text(root / rel)


class _ShardHasher:
    def __init__(self) -> None:
        self.h, self.docs = hashlib.sha256(), 0

    def add(self, doc_id: str, text: str) -> None:
        self.h.update(doc_id.encode() + b"\0" + text.encode("utf-8", "surrogatepass") + b"\0")
        self.docs += 1

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def plan_shards(
    source: str | Path,
    *,
    format: str | None = None,
    shard_size: int = 64,
    text_field: str = "text",
    id_field: str | None = "id",
) -> list[ShardSpec]:
    """The shards of `source` (see :func:`resolve_source`), in input order: `shard_size` documents each (fewer at
    the end of a file). Reads every document once (to name the shards and to refuse a bad line before any work)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    kind, root, files = resolve_source(source, format)
    fields = _Fields(text_field, id_field)
    specs: list[ShardSpec] = []
    if kind == "text":
        rels = [str(p.relative_to(root)) for p in files]
        for lo in range(0, len(rels), shard_size):
            h = _ShardHasher()
            for rel in rels[lo : lo + shard_size]:
                h.add(*_text_doc(root, rel))
            specs.append(ShardSpec(kind, str(root), h.hexdigest(), h.docs, files=tuple(rels[lo : lo + shard_size])))
        return specs
    for path in files:
        name = str(path.relative_to(root))
        h, begin, first = _ShardHasher(), 0, 0
        if kind == "jsonl":
            for at, lineno, doc_id, text in _jsonl_docs(path, name, fields):
                h.add(doc_id, text)
                if h.docs == shard_size:
                    specs.append(ShardSpec(kind, str(path), h.hexdigest(), h.docs, begin, at, first, name=name))
                    h, begin, first = _ShardHasher(), at, lineno
            if h.docs:
                specs.append(
                    ShardSpec(kind, str(path), h.hexdigest(), h.docs, begin, path.stat().st_size, first, name=name)
                )
        else:
            row = -1
            for row, doc_id, text in _parquet_docs(path, name, fields):
                h.add(doc_id, text)
                if h.docs == shard_size:
                    specs.append(ShardSpec(kind, str(path), h.hexdigest(), h.docs, begin, row + 1, name=name))
                    h, begin = _ShardHasher(), row + 1
            if h.docs:
                specs.append(ShardSpec(kind, str(path), h.hexdigest(), h.docs, begin, row + 1, name=name))
    return specs


def read_shard(spec: ShardSpec, *, text_field: str = "text", id_field: str | None = "id") -> list[tuple[str, str]]:
    """(id, text) of each document of a shard; ValueError if they are no longer what the shard was planned from."""
    fields = _Fields(text_field, id_field)
    if spec.format == "text":
        docs = [_text_doc(Path(spec.path), rel) for rel in spec.files]
    else:
        path, name = Path(spec.path), spec.name
        if spec.format == "jsonl":
            found = _jsonl_docs(path, name, fields, spec.start, spec.stop, spec.first)
            docs = [(doc_id, text) for _, _, doc_id, text in found]
        else:
            docs = [(doc_id, text) for _, doc_id, text in _parquet_docs(path, name, fields, spec.start, spec.stop)]
    h = _ShardHasher()
    for doc_id, text in docs:
        h.add(doc_id, text)
    if h.hexdigest() != spec.sha:
        raise ValueError(f"{spec.path} changed while it was being indexed: run the indexing again")
    return docs


# ------------------------------------------------------------------------------------------------ chunks
def chunk_texts(tokenizer: Any, texts: Sequence[str], chunk_tokens: int) -> list[list[str]]:
    """Each text cut into consecutive chunks of `chunk_tokens` tokens of its own tokenization
    (:func:`~icformer_rag.windows.split_windows` over its tokens), each chunk running from the start of its first
    token to the start of the next chunk's, so that the chunks concatenate to the text. A text of whitespace only
    has no chunk. (A chunk tokenized on its own may differ from its part of the whole by a token at an edge.)"""
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
    texts = list(texts)
    if not texts:
        return []
    offsets = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
    out: list[list[str]] = []
    for text, spans in zip(texts, offsets, strict=True):
        if not text.strip():
            out.append([])
            continue
        starts = [spans[w[0]][0] for w in split_windows(range(len(spans)), chunk_tokens)] or [0]
        bounds = [0, *starts[1:], len(text)]
        out.append([text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if a < b])
    return out


@dataclass
class ShardResult:
    """A compressed shard: its chunks (``doc``, ``chunk``, ``key``, ``text`` each) and the digest of each distinct
    chunk text, in first-seen order. `written` is set by the commit: how many of them the store did not hold."""

    spec: ShardSpec
    chunks: list[dict[str, Any]]
    digests: list[Digest]
    seconds: float
    written: int = 0


class _ShardCompressor:
    """Reads, chunks and compresses one shard: the single-process path and each Ray actor run this."""

    def __init__(self, compressor: ContextCompressor, chunk_tokens: int, fields: _Fields) -> None:
        self.compressor, self.chunk_tokens, self.fields = compressor, chunk_tokens, fields

    def run(self, spec: ShardSpec) -> ShardResult:
        start = time.perf_counter()
        docs = read_shard(spec, text_field=self.fields.text_field, id_field=self.fields.id_field)
        fingerprint = self.compressor.fingerprint
        chunks: list[Any] = []
        texts: dict[str, str] = {}
        for (doc_id, _), parts in zip(
            docs, chunk_texts(self.compressor.tokenizer, [t for _, t in docs], self.chunk_tokens), strict=True
        ):
            for i, text in enumerate(parts):
                key = key_for(text, fingerprint)
                texts.setdefault(key, text)
                chunks.append({"doc": doc_id, "chunk": i, "key": key, "text": text})
        digests = [d.to("cpu") for d in self.compressor.compress(list(texts.values()))]
        return ShardResult(spec, chunks, digests, time.perf_counter() - start)


class _RayShardWorker:
    """The map_batches callable of the Ray path: one compressor per actor (on its GPU when it has one)."""

    def __init__(self, compressor_ref: list[Any], chunk_tokens: int, fields: _Fields, threads: int) -> None:
        import ray
        import torch

        torch.set_num_threads(max(1, threads))
        compressor = ray.get(compressor_ref[0])
        if ray.get_gpu_ids() and torch.cuda.is_available():
            compressor.model.to("cuda")
            compressor.embed_tokens.to("cuda")
        self.shards = _ShardCompressor(compressor, chunk_tokens, fields)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        specs = [str(s) for s in batch["spec"]]
        return {"spec": specs, "result": [pickle.dumps(self.shards.run(ShardSpec.from_json(s))) for s in specs]}


# ------------------------------------------------------------------------------------------------ store side
def _open_store(store: str | Path | DigestStore | PackedDigestStore, dtype: str) -> tuple[Any, Path, bool]:
    from .packed_store import PackedDigestStore

    if isinstance(store, (str, Path)):
        opened = PackedDigestStore(Path(store).expanduser(), dtype=dtype)
        return opened, opened.folder, True
    if not isinstance(store, (DigestStore, PackedDigestStore)):
        raise TypeError(f"store must be a path, a DigestStore or a PackedDigestStore, got {type(store).__name__}")
    if store.folder is None:
        raise ValueError("indexing needs a store on disk (its manifest lives beside the digests), not a memory store")
    return store, Path(store.folder), False


def _held(store: Any, keys: Sequence[str]) -> set[str]:
    """The keys among `keys` whose digest the store serves (a damaged one is not held: it is written again)."""
    try:
        return {k for k, d in zip(keys, store.get_many(keys), strict=True) if d is not None}
    except InvalidDigestError:
        held = set()
        for k in keys:
            try:
                if store.get(k) is not None:
                    held.add(k)
            except InvalidDigestError:
                pass
        return held


def _write_atomic(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _Manifest:
    """``indexing/manifest.jsonl``: one line per committed shard (append-only; a torn last line is ignored)."""

    def __init__(self, folder: Path, run: str) -> None:
        self.path, self.run = folder / INDEX_DIR / "manifest.jsonl", run
        self.done: set[str] = set()
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("run") == run:
                    self.done.add(cast(str, entry.get("shard")))

    def add(self, entry: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"run": self.run, **entry}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done.add(entry["shard"])


def chunks_path(folder: str | Path, shard_sha: str) -> Path:
    return Path(folder) / INDEX_DIR / "chunks" / f"{shard_sha[:32]}.jsonl"


def read_chunks(store_folder: str | Path) -> Iterator[dict[str, Any]]:
    """Every chunk an indexing run recorded in a store's folder (``doc``, ``chunk``, ``key``, ``text``), by shard:
    what a retriever's own index (a vector store) holds, with the key of each chunk's digest."""
    for path in sorted((Path(store_folder) / INDEX_DIR / "chunks").glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            yield from (json.loads(line) for line in f if line.strip())


def _commit(store: Any, folder: Path, manifest: _Manifest, result: ShardResult) -> None:
    keys = [digest_key(d) for d in result.digests]
    held = _held(store, keys)
    fresh = [d for k, d in zip(keys, result.digests, strict=True) if k not in held]
    if fresh:
        store.put_many(fresh)
    result.written = len(fresh)
    _write_atomic(chunks_path(folder, result.spec.sha), (json.dumps(c) + "\n" for c in result.chunks))
    manifest.add(
        {
            "shard": result.spec.sha,
            "source": result.spec.path,
            "docs": result.spec.docs,
            "chunks": len(result.chunks),
            "digests": len(result.digests),
            "written": result.written,
            "seconds": round(result.seconds, 4),
        }
    )


# ------------------------------------------------------------------------------------------------ driver
@dataclass
class IndexResult:
    """What :func:`index_documents` did."""

    store: str
    shards: int
    skipped: int
    documents: int
    chunks: int
    digests: int
    written: int
    seconds: float
    workers: int
    ray: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def require_ray() -> Any:
    """The `ray` module with Ray Data; ImportError naming the install command when it is missing."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ImportError(f"indexing on Ray needs Ray Data, which is not installed: {RAY_HINT}") from err
    return ray


def index_documents(
    source: str | Path,
    store: str | Path | DigestStore | PackedDigestStore,
    *,
    compressor: ContextCompressor,
    format: str | None = None,
    text_field: str = "text",
    id_field: str | None = "id",
    chunk_tokens: int | None = None,
    shard_size: int = 64,
    workers: int = 1,
    use_ray: bool | None = None,
    num_gpus: float | None = None,
    cpus_per_worker: float = 1.0,
    store_dtype: str = "bf16",
    show_progress: bool = True,
    on_shard: Callable[[ShardResult], None] | None = None,
) -> IndexResult:
    """Read, chunk and compress the documents of `source` into the digest store `store` (see the module docstring).

    Args:
        source: a .jsonl / .parquet / .txt / .md file, or a folder of one kind of them.
        store: a folder for a :class:`PackedDigestStore` (created if needed), or an open store with a folder.
        compressor: the compressor (its tokenizer chunks; on Ray, each actor gets a pickled copy).
        format: ``"jsonl"``, ``"parquet"`` or ``"text"``; default: from the file names.
        text_field: the JSON field / Parquet column holding a document's text.
        id_field: the field / column of a document's id (default ``"id"``; missing: ``<file>:<line or row>``).
        chunk_tokens: tokens per chunk; default the compressor's window (one window of digests per chunk).
        shard_size: documents per shard (the unit of work, of progress and of resuming).
        workers: Ray actors (each with one compressor); more than 1 means Ray.
        use_ray: run on Ray Data (``ray.init()`` here unless Ray is initialised already: ``RAY_ADDRESS`` joins a
            cluster); default: when `workers` > 1.
        num_gpus: GPUs per actor; default 1 when the Ray cluster has GPUs, else 0 (CPU actors).
        cpus_per_worker: CPUs (and torch threads) per actor.
        store_dtype: how a new packed store holds vectors: ``"bf16"``, ``"int8"`` or ``"fp8"``.
        show_progress: a progress bar over shards on stderr.
        on_shard: called after each shard is committed, with its :class:`ShardResult`.

    Returns:
        an :class:`IndexResult`. Raises FileNotFoundError / ValueError for a bad source (a bad line names its file
        and line), ImportError when Ray (or pyarrow, for Parquet) is needed and not installed.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    use_ray = workers > 1 if use_ray is None else use_ray
    ray = require_ray() if use_ray else None  # before any work: a missing Ray is said at once
    if getattr(compressor, "tokenizer", None) is None:
        raise ValueError("the compressor has no tokenizer: indexing chunks text by the LLM's own tokens")
    chunk_tokens = compressor.config.window_tokens if chunk_tokens is None else chunk_tokens
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
    fields = _Fields(text_field, id_field)
    specs = plan_shards(source, format=format, shard_size=shard_size, text_field=text_field, id_field=id_field)
    opened, folder, close = _open_store(store, store_dtype)
    start = time.perf_counter()
    try:
        identity = {
            "fingerprint": compressor.fingerprint,
            "chunk_tokens": chunk_tokens,
            "text_field": text_field,
            "id_field": id_field,
        }
        manifest = _Manifest(folder, hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16])
        todo = [s for s in specs if s.sha not in manifest.done]
        todo = list({s.sha: s for s in todo}.values())  # two shards of the same contents are one
        result = IndexResult(str(folder), len(specs), len(specs) - len(todo), 0, 0, 0, 0, 0.0, workers, use_ray)
        bar = tqdm(
            total=len(todo), desc="indexing", unit="shard", disable=not show_progress or not todo, file=sys.stderr
        )

        def commit(shard: ShardResult) -> None:
            _commit(opened, folder, manifest, shard)
            result.documents += shard.spec.docs
            result.chunks += len(shard.chunks)
            result.digests += len(shard.digests)
            result.written += shard.written
            bar.update(1)
            bar.set_postfix(chunks=result.chunks, written=result.written)
            if on_shard is not None:
                on_shard(shard)

        with bar:
            if not todo:
                pass
            elif ray is None:
                # The next shard compresses while the last one is written (one writer thread, shards in order).
                local = _ShardCompressor(compressor, chunk_tokens, fields)
                with ThreadPoolExecutor(1, thread_name_prefix="icformer-index-writer") as writer:
                    pending: Future[None] | None = None
                    for spec in todo:
                        shard = local.run(spec)
                        if pending is not None:
                            pending.result()
                        pending = writer.submit(commit, shard)
                    if pending is not None:
                        pending.result()
            else:
                for shard in _run_on_ray(
                    ray, todo, compressor, chunk_tokens, fields, workers, num_gpus, cpus_per_worker
                ):
                    commit(shard)
        result.seconds = time.perf_counter() - start
        return result
    finally:
        if close:
            opened.close()


def _run_on_ray(
    ray: Any,
    specs: Sequence[ShardSpec],
    compressor: ContextCompressor,
    chunk_tokens: int,
    fields: _Fields,
    workers: int,
    num_gpus: float | None,
    cpus_per_worker: float,
) -> Iterator[ShardResult]:
    """The shards' results, in order, from `workers` actors of a Ray Data pipeline."""
    from ray.data import DataContext

    started = not ray.is_initialized()
    if started:
        ray.init(log_to_driver=False, include_dashboard=False)
    if num_gpus is None:  # a GPU per actor when the cluster has GPUs
        num_gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    ctx = DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    try:
        # In order: a text in two shards is written from the first, as one process writes it.
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = True, False
        ref = ray.put(compressor)
        ds = ray.data.from_items([{"spec": s.to_json()} for s in specs], override_num_blocks=len(specs))
        ds = ds.map_batches(
            _RayShardWorker,
            fn_constructor_args=([ref], chunk_tokens, fields, int(cpus_per_worker)),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(workers, len(specs))),  # `concurrency=workers` before Ray 2.51
            num_cpus=cpus_per_worker,
            num_gpus=num_gpus,
        )
        for row in ds.iter_rows():
            yield pickle.loads(row["result"])
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
        if started:
            ray.shutdown()
