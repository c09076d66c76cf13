"""PackedDigestStore: digests packed into large shard files, for corpora of millions of chunks (issue 17).

The same interface and the same guarantees as :class:`~icformer_rag.store.DigestStore` (key -> digest, keys tied
to the text and the compressor's fingerprint, every entry checked before it is served, an in-memory LRU cache,
:meth:`compress_cached`), plus what a large store needs: batched writes and reads (:meth:`put_many`,
:meth:`get_many`), :meth:`delete`, :meth:`keys`, :meth:`compact` and a migration from the folder format
(:func:`migrate_folder`), and 8-bit storage (``dtype="int8"`` or ``"fp8"``, :mod:`icformer_rag.quantize`).

Two backends share one record format:

- ``"shards"`` (the default, standard library only): records appended to shard files ``shards/NNNNNN.bin`` (1 GiB
  each by default), an SQLite index (WAL mode) of key -> (shard, offset, length), reads through ``mmap`` (no
  file open per digest; a digest stored in the dtype it is read in is not even copied). Bytes once written are never
  changed: a writer appends after whatever is in the file, so a reader's mapping is never rewritten under it.
- ``"lmdb"`` (``pip install lmdb``): the same records as LMDB values.

**Why shards + SQLite is the default** (``python -m benchmarks.store``, results/cpu/store_run2.json, 2-core CPU):
both meet issue 17's read target with room (p99 of one 128 x 576 digest 0.68 ms vs LMDB's 0.39 ms, 1M keys 0.46
vs 0.39 ms) and write big digests alike (1,306 vs 1,224 digests/s); LMDB is faster on the index alone (p50 0.16 vs
0.22 ms; 16k vs 7k tiny records/s). Shards win on what a large store needs besides: the standard library only (a
small user configures nothing; LMDB needs a package and a map size), 2.5% (bf16) to 4.5% (int8) less disk (LMDB's
page overhead), immutable shard files that can be copied or shared between machines as they are, and compaction
while readers keep reading (LMDB's file never shrinks; compacting it is a full copy with no other user open).

**Records.** Each record is a fixed 32-byte head (magic, format version, codec, lengths, the CRC-32 of the
record), a JSON header (the digest's metadata, shape, original dtype) and the vectors in storage form. A record
whose checksum, lengths or metadata do not hold is never served: :class:`InvalidDigestError` names the key.

**Crash safety (shards).** A write appends its records to the shard, then commits their index rows in one SQLite
transaction; ``put`` returns after that commit. A process killed mid-write leaves at most an unindexed tail that
no reader ever looks at (the next writer appends after it; :meth:`compact` drops it), so nothing torn is served
and nothing reported written is lost. ``sync=True`` also fsyncs the shard and the index before returning (for
power loss, not only a process crash), at a cost in write throughput.

**Concurrency.** Any number of reader threads and processes; one writer at a time, across processes, through
the lock file ``writer.lock`` (``fcntl.flock``), taken for each write (a second writer waits, up to
``lock_timeout`` seconds). Readers never wait for the writer (SQLite WAL). :meth:`compact` holds the lock too;
readers that are running keep working through it (files it retires are unlinked, not overwritten).
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import sqlite3
import struct
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import quantize
from .digest import FLOAT_DTYPES, Digest, InvalidDigestError
from .store import _KEY_RE, KEY_CHARS, BaseDigestStore, digest_key

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["BACKENDS", "PackedDigestStore", "StoreLockedError", "migrate_folder"]

BACKENDS = ("shards", "lmdb")
_MAGIC = b"ICFD"
_VERSION = 1
# magic, version, codec id, flags, header length, body length (all after the 32-byte head), CRC-32
_HEAD = struct.Struct("<4sBBHIQI")
_HEAD_SIZE = 32
_CRC_AT = _HEAD.size - 4
_CODEC_IDS = {name: i + 1 for i, name in enumerate(quantize.CODECS)}
_CODEC_NAMES = {i: name for name, i in _CODEC_IDS.items()}
_ELEM = {"bf16": torch.bfloat16, "int8": torch.int8, "fp8": torch.float8_e4m3fn}
_DTYPE_NAMES = {str(d).removeprefix("torch."): d for d in FLOAT_DTYPES}
_ALIGN = 64  # records start on 64-byte boundaries in a shard; vectors on 16-byte boundaries in a record
_FORMAT_FILE = "FORMAT"
_FORMAT = "icformer-rag.packed-store.v1"


class StoreLockedError(RuntimeError):
    """Another writer held the store's lock for longer than `lock_timeout`."""


def _align(n: int, to: int) -> int:
    return -(-n // to) * to


# ---------------------------------------------------------------------------------------------------- records
def encode_record(digest: Digest, codec: str) -> bytearray:
    """One digest as a self-checking record (see the module docstring)."""
    enc = quantize.encode(digest.embeddings, codec)
    m, c = enc.data.shape
    header = json.dumps(
        {
            "key": digest_key(digest),
            "num_tokens": digest.num_tokens,
            "content_hash": digest.content_hash,
            "fingerprint": digest.fingerprint,
            "window_digests": list(digest.window_digests),
            "shape": [m, c],
            "dtype": str(digest.embeddings.dtype).removeprefix("torch."),
        },
        separators=(",", ":"),
    ).encode()
    payload_at = _align(_HEAD_SIZE + len(header), 16)
    scale_bytes = 0 if enc.scale is None else 4 * m
    rec = bytearray(payload_at + scale_bytes + enc.data.numel() * enc.data.element_size())  # one copy of the vectors
    rec[_HEAD_SIZE : _HEAD_SIZE + len(header)] = header
    if enc.scale is not None:
        rec[payload_at : payload_at + scale_bytes] = memoryview(enc.scale.float().numpy()).cast("B")  # type: ignore[arg-type]
    if enc.data.numel():
        rec[payload_at + scale_bytes :] = memoryview(enc.data.view(torch.uint8).numpy()).cast("B")  # type: ignore[arg-type]
    _HEAD.pack_into(rec, 0, _MAGIC, _VERSION, _CODEC_IDS[enc.codec], 0, len(header), len(rec) - _HEAD_SIZE, 0)
    mv = memoryview(rec)
    struct.pack_into("<I", rec, _CRC_AT, zlib.crc32(mv[_HEAD_SIZE:], zlib.crc32(mv[:_CRC_AT])))
    return rec


def record_length(buf: Any) -> int | None:
    """Total length of the record starting at `buf` (from its head), or None if `buf` holds no record head."""
    if len(buf) < _HEAD_SIZE:
        return None
    magic, version, _, _, _, body_len, _ = _HEAD.unpack_from(buf, 0)
    return _HEAD_SIZE + body_len if magic == _MAGIC and version == _VERSION else None


def decode_record(buf: Any, key: str, where: str, out_dtype: torch.dtype | None, device: torch.device) -> Digest | None:
    """The digest in record `buf` (a writable buffer: its vectors may stay in it), checked as `Digest.load` checks a
    file: the record's CRC-32 and lengths, the metadata, dtype and shape, finite values. A damaged record raises
    InvalidDigestError; a sound record of another key (or a mismatched text/compressor) is a miss (None)."""

    def bad(why: str) -> InvalidDigestError:
        return InvalidDigestError(f"stored digest {key} is damaged and will not be served: {why} ({where})")

    if len(buf) < _HEAD_SIZE:
        raise bad(f"record of {len(buf)} bytes, shorter than its head")
    magic, version, codec_id, _, header_len, body_len, crc = _HEAD.unpack_from(buf, 0)
    if magic != _MAGIC or version != _VERSION:
        raise bad("no record head (torn or overwritten)")
    if _HEAD_SIZE + body_len != len(buf) or header_len > body_len:
        raise bad(f"record of {len(buf)} bytes, its head says {_HEAD_SIZE + body_len} (torn write)")
    mv = memoryview(buf)
    if zlib.crc32(mv[_HEAD_SIZE:], zlib.crc32(mv[:_CRC_AT])) != crc:
        raise bad("CRC-32 mismatch (torn write or bit rot)")
    codec = _CODEC_NAMES.get(codec_id)
    if codec is None:
        raise bad(f"unknown codec id {codec_id}")
    try:
        meta = json.loads(bytes(mv[_HEAD_SIZE : _HEAD_SIZE + header_len]))
        m, c = meta["shape"]
        dtype = _DTYPE_NAMES[meta["dtype"]]
        fields = (meta["num_tokens"], meta["content_hash"], meta["fingerprint"], meta["window_digests"])
    except (ValueError, KeyError, TypeError) as err:
        raise bad(f"malformed metadata ({type(err).__name__}: {err})") from err
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (m, c)):
        raise bad(f"malformed shape {meta['shape']!r}")
    payload_at = _align(_HEAD_SIZE + header_len, 16)
    need = quantize.stored_bytes(m, c, codec)
    if len(buf) - payload_at != need:
        raise bad(f"{len(buf) - payload_at} bytes of vectors, a {codec} ({m}, {c}) digest has {need}")
    scale = None
    at = payload_at
    if codec != "bf16":
        scale = torch.frombuffer(buf, dtype=torch.float32, count=m, offset=at) if m else torch.zeros(0)
        at += 4 * m
    n = m * c
    data = torch.frombuffer(buf, dtype=_ELEM[codec], count=n, offset=at) if n else torch.zeros(0, dtype=_ELEM[codec])
    vectors = quantize.decode(quantize.Encoded(codec, data.view(m, c), scale), out_dtype or dtype)
    try:
        digest = Digest(vectors, fields[0], fields[1], fields[2], fields[3]).validate()
    except (TypeError, ValueError) as err:
        raise bad(str(err)) from err
    if digest_key(digest) != key:
        return None
    return digest.to(device=device) if device.type != "cpu" else digest


# --------------------------------------------------------------------------------------------------- backends
class _ShardBackend:
    """Append-only shard files and an SQLite index (see the module docstring)."""

    def __init__(self, path: Path, *, sync: bool, shard_bytes: int, lock_timeout: float) -> None:
        self.path = path
        self.shard_dir = path / "shards"
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.sync = sync
        self.shard_bytes = shard_bytes
        self.lock_timeout = lock_timeout
        self._local = threading.local()
        self._maps: dict[int, mmap.mmap] = {}
        self._maps_lock = threading.Lock()
        self._write_lock = threading.Lock()  # threads of this process; flock orders processes
        self._conn().executescript(
            """
            CREATE TABLE IF NOT EXISTS digests (
                key TEXT PRIMARY KEY, shard INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL
            ) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS digests_by_shard ON digests (shard);
            """
        )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.path / "index.sqlite", timeout=60.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self.sync else 'NORMAL'}")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _shard_path(self, shard: int) -> Path:
        return self.shard_dir / f"{shard:06d}.bin"

    # reads
    def _locate(self, keys: Sequence[str]) -> dict[str, tuple[int, int, int]]:
        conn = self._conn()
        if len(keys) == 1:
            rows = conn.execute("SELECT key, shard, offset, length FROM digests WHERE key = ?", (keys[0],))
        else:
            marks = ",".join("?" * len(keys))
            rows = conn.execute(f"SELECT key, shard, offset, length FROM digests WHERE key IN ({marks})", list(keys))
        return {k: (s, o, n) for k, s, o, n in rows}

    def _view(self, shard: int, offset: int, length: int) -> memoryview | None:
        """The record's bytes, through this process's (copy-on-write) mapping of its shard; None when the shard is
        shorter than that."""
        end = offset + length
        with self._maps_lock:
            mm = self._maps.get(shard)
            if mm is None or len(mm) < end:
                with open(self._shard_path(shard), "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size < end:
                        return None
                    mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
                self._maps[shard] = mm  # an older, shorter mapping stays alive while digests use it
        return memoryview(mm)[offset:end]

    def records(self, keys: Sequence[str]) -> dict[str, tuple[memoryview | None, str]]:
        """key -> (its record's bytes, where they are) for the keys in the index; None bytes: the shard is gone or
        shorter than the index says (lost data)."""
        out: dict[str, tuple[memoryview | None, str]] = {}
        for attempt in range(2):
            todo = [k for k in keys if k not in out]
            if not todo:
                break
            for k, (shard, offset, length) in self._locate(todo).items():
                where = f"{self._shard_path(shard)} at {offset}"
                try:
                    view = self._view(shard, offset, length)
                except FileNotFoundError:  # retired by a compaction since the lookup: look again
                    if attempt == 0:
                        continue
                    view = None
                out[k] = (view if view is not None and len(view) == length else None, where)
        return out

    def count(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM digests").fetchone()[0]

    def keys(self) -> Iterator[str]:
        rows = self._conn().execute("SELECT key FROM digests ORDER BY key").fetchall()
        return (k for (k,) in rows)

    # writes
    @contextmanager
    def writer(self) -> Iterator[None]:
        with self._write_lock:
            fd = os.open(self.path / "writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                deadline = time.monotonic() + self.lock_timeout
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise StoreLockedError(
                                f"{self.path}: another writer has held writer.lock for {self.lock_timeout:g} s"
                            ) from None
                        time.sleep(0.005)
                yield
            finally:
                os.close(fd)  # releases the lock

    def _active_shard(self) -> int:
        shards = sorted(int(p.stem) for p in self.shard_dir.glob("*.bin") if p.stem.isdigit())
        return shards[-1] if shards else 0

    def put_records(self, records: Sequence[tuple[str, bytearray]]) -> None:
        with self.writer():
            shard = self._active_shard()
            rows, fds = [], {}
            try:
                fd = fds[shard] = os.open(self._shard_path(shard), os.O_RDWR | os.O_CREAT, 0o644)
                pos = _align(os.fstat(fd).st_size, _ALIGN)  # after whatever is there, a torn tail included
                for key, rec in records:
                    if pos and pos + len(rec) > self.shard_bytes:
                        shard, pos = shard + 1, 0
                        fd = fds[shard] = os.open(self._shard_path(shard), os.O_RDWR | os.O_CREAT, 0o644)
                    _pwrite_all(fd, rec, pos)
                    rows.append((key, shard, pos, len(rec)))
                    pos = _align(pos + len(rec), _ALIGN)
                if self.sync:
                    for f in fds.values():
                        os.fsync(f)
                    _fsync_dir(self.shard_dir)
            finally:
                for f in fds.values():
                    os.close(f)
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def delete(self, keys: Sequence[str]) -> int:
        with self.writer():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                n = sum(conn.execute("DELETE FROM digests WHERE key = ?", (k,)).rowcount for k in keys)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return n

    def disk_bytes(self) -> int:
        files = [*self.shard_dir.glob("*.bin"), *self.path.glob("index.sqlite*")]
        return sum(p.stat().st_size for p in files if p.is_file())

    def compact(self, min_dead_fraction: float) -> dict[str, int]:
        """Copy the live records of every shard with at least `min_dead_fraction` of dead bytes (deleted or replaced
        records, torn tails) into new shards, repoint the index in one transaction, unlink the old shards."""
        with self.writer():
            conn = self._conn()
            live = dict(conn.execute("SELECT shard, SUM(length) FROM digests GROUP BY shard").fetchall())
            sizes = {int(p.stem): p.stat().st_size for p in self.shard_dir.glob("*.bin") if p.stem.isdigit()}
            victims = sorted(
                s for s, size in sizes.items() if size and (size - live.get(s, 0)) / size >= min_dead_fraction
            )
            if not victims:
                return {"shards_rewritten": 0, "bytes_before": sum(sizes.values()), "bytes_after": sum(sizes.values())}
            shard = max(sizes) + 1  # shard numbers only grow: a reader's old mapping never stands for a new shard
            pos, dropped = 0, 0
            moved: list[tuple[int | None, int | None, int | None, str]] = []  # (shard, offset, length, key)
            fd: int | None = os.open(self._shard_path(shard), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                for old in victims:
                    rows = conn.execute(
                        "SELECT key, offset, length FROM digests WHERE shard = ? ORDER BY offset", (old,)
                    ).fetchall()
                    with open(self._shard_path(old), "rb") as f:
                        for key, offset, length in rows:
                            f.seek(offset)
                            rec = f.read(length)
                            if len(rec) != length or not _record_ok(rec):
                                dropped += 1  # damaged: it was never served, and is not carried over
                                moved.append((None, None, None, key))
                                continue
                            assert fd is not None  # open from here to the finally
                            if pos and pos + length > self.shard_bytes:
                                self._close_shard(fd)
                                fd = None
                                shard += 1
                                fd, pos = os.open(self._shard_path(shard), os.O_RDWR | os.O_CREAT, 0o644), 0
                            _pwrite_all(fd, rec, pos)
                            moved.append((shard, pos, length, key))
                            pos = _align(pos + length, _ALIGN)
            finally:
                if fd is not None:
                    self._close_shard(fd)
            _fsync_dir(self.shard_dir)
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "UPDATE digests SET shard = ?, offset = ?, length = ? WHERE key = ?",
                    [m for m in moved if m[0] is not None],
                )
                conn.executemany("DELETE FROM digests WHERE key = ?", [(m[3],) for m in moved if m[0] is None])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            for old in victims:
                self._shard_path(old).unlink(missing_ok=True)
            with self._maps_lock:
                for old in victims:
                    self._maps.pop(old, None)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            after = {int(p.stem): p.stat().st_size for p in self.shard_dir.glob("*.bin") if p.stem.isdigit()}
            return {
                "shards_rewritten": len(victims),
                "records_moved": sum(1 for m in moved if m[0] is not None),
                "damaged_dropped": dropped,
                "bytes_before": sum(sizes.values()),
                "bytes_after": sum(after.values()),
            }

    def _close_shard(self, fd: int) -> None:
        os.fsync(fd)  # a compaction always syncs: the old copies are unlinked once the index points here
        os.close(fd)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local = threading.local()
        with self._maps_lock:
            self._maps.clear()  # mappings still used by digests stay alive with them


_LMDB_ENVS: dict[str, tuple[Any, int]] = {}
_LMDB_LOCK = threading.Lock()


class _LMDBBackend:
    """The same records as the values of one LMDB environment (`pip install lmdb`)."""

    def __init__(self, path: Path, *, sync: bool, map_size: int, lock_timeout: float) -> None:
        try:
            import lmdb
        except ImportError as err:
            raise ImportError("backend='lmdb' needs the lmdb package: pip install lmdb") from err
        self._lmdb = lmdb
        self.path = path
        self.sync = sync
        self.map_size = map_size
        self.lock_timeout = lock_timeout
        self._write_lock = threading.Lock()
        self._open()

    def _open(self) -> None:
        # LMDB allows one environment per file per process: stores of one path in a process share it.
        where = os.path.realpath(self.path / "lmdb")
        with _LMDB_LOCK:
            env, users = _LMDB_ENVS.get(where, (None, 0))
            if env is None:
                env = self._lmdb.open(
                    where,
                    map_size=self.map_size,
                    subdir=True,
                    sync=self.sync,
                    metasync=self.sync,
                    readahead=False,
                    max_readers=1024,
                    lock=True,
                )
            _LMDB_ENVS[where] = (env, users + 1)
        self.env, self._where = env, where

    def _release(self) -> None:
        with _LMDB_LOCK:
            env, users = _LMDB_ENVS.get(self._where, (None, 0))
            if env is None:
                return
            if users <= 1:
                del _LMDB_ENVS[self._where]
                env.close()
            else:
                _LMDB_ENVS[self._where] = (env, users - 1)

    def records(self, keys: Sequence[str]) -> dict[str, tuple[bytearray | None, str]]:
        out: dict[str, tuple[bytearray | None, str]] = {}
        with self.env.begin(buffers=True) as txn:
            for k in keys:
                buf = txn.get(k.encode())
                if buf is not None:
                    out[k] = (bytearray(buf), f"{self.path / 'lmdb'}")  # the buffer dies with the transaction
        return out

    def count(self) -> int:
        return self.env.stat()["entries"]

    def keys(self) -> Iterator[str]:
        with self.env.begin() as txn:
            keys = [k.decode() for k in txn.cursor().iternext(keys=True, values=False)]
        return iter(keys)

    @contextmanager
    def writer(self) -> Iterator[None]:
        with self._write_lock:  # LMDB serializes writers across processes itself
            yield

    def put_records(self, records: Sequence[tuple[str, bytearray]]) -> None:
        with self._write_lock, self.env.begin(write=True) as txn:
            for key, rec in records:
                txn.put(key.encode(), rec)

    def delete(self, keys: Sequence[str]) -> int:
        with self._write_lock, self.env.begin(write=True) as txn:
            return sum(bool(txn.delete(k.encode())) for k in keys)

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path / "lmdb").glob("*.mdb"))

    def compact(self, min_dead_fraction: float) -> dict[str, int]:
        """LMDB reuses freed pages itself; this copies the environment compacted and swaps it in (no reader of
        another process may have it open meanwhile)."""
        with self._write_lock:
            with _LMDB_LOCK:
                if _LMDB_ENVS.get(self._where, (None, 0))[1] > 1:
                    raise RuntimeError(f"{self.path}: close the other stores of this path before compacting it")
            before = self.disk_bytes()
            tmp = self.path / "lmdb.compact"
            tmp.mkdir(exist_ok=True)
            self.env.copy(str(tmp), compact=True)
            self._release()
            os.replace(tmp / "data.mdb", self.path / "lmdb" / "data.mdb")
            (self.path / "lmdb" / "lock.mdb").unlink(missing_ok=True)
            for p in tmp.iterdir():
                p.unlink()
            tmp.rmdir()
            self._open()
            return {"bytes_before": before, "bytes_after": self.disk_bytes()}

    def close(self) -> None:
        self._release()


def _pwrite_all(fd: int, data: bytes | bytearray, pos: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view, pos = view[n:], pos + n


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _record_ok(rec: bytes) -> bool:
    if record_length(rec) != len(rec):
        return False
    crc = _HEAD.unpack_from(rec, 0)[-1]
    return zlib.crc32(rec[_HEAD_SIZE:], zlib.crc32(rec[:_CRC_AT])) == crc


# ------------------------------------------------------------------------------------------------------ store
class _RecordStore(BaseDigestStore):
    """A digest store over records (:func:`encode_record`), whatever holds them: the reads, writes and checks
    that :class:`PackedDigestStore` and :class:`~icformer_rag.kv_store.KVDigestStore` share. A subclass calls
    :meth:`_configure` first, then sets `_backend`: an object with `records`, `put_records`, `delete`, `count`,
    `keys` and `close`, as :class:`_ShardBackend` has."""

    _backend: Any

    def _configure(
        self,
        dtype: str | torch.dtype,
        out_dtype: torch.dtype | None,
        device: str | torch.device,
        max_cached: int | None,
        readonly: bool,
    ) -> None:
        """Check and set the options every record store takes (see :class:`PackedDigestStore`)."""
        if max_cached is not None and max_cached < 1:
            raise ValueError("max_cached must be positive or None")
        if out_dtype is not None and out_dtype not in FLOAT_DTYPES:
            raise ValueError(f"out_dtype must be one of {FLOAT_DTYPES}, got {out_dtype}")
        self.codec = quantize.codec_name(dtype)
        self.out_dtype = out_dtype
        self.device = torch.device(device)
        self.max_cached = max_cached
        self.readonly = readonly
        self._cache: OrderedDict[str, Digest] = OrderedDict()
        self._lock = threading.RLock()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
        self._backend.close()

    # ------------------------------------------------------------------------------------------- access
    def get(self, key: str) -> Digest | None:
        """The digest stored under `key`, or None; see :meth:`DigestStore.get`. A record that fails its checks
        (torn, bit rot, metadata that does not fit its vectors, NaN/inf) raises InvalidDigestError, never a hit."""
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[str]) -> list[Digest | None]:
        """The digests under `keys`, in order (None for a miss): one index lookup for all of them."""
        out: dict[str, Digest | None] = {}
        todo = []
        for key in dict.fromkeys(keys):
            if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
                out[key] = None
                continue
            digest = self._cached(key)
            if digest is not None:
                out[key] = digest
            else:
                todo.append(key)
        if todo:
            found = self._backend.records(todo)
            for key in todo:
                if key not in found:
                    out[key] = None
                    continue
                buf, where = found[key]
                if buf is None:
                    raise InvalidDigestError(
                        f"stored digest {key} is damaged and will not be served: its record is missing from "
                        f"{where} (the shard is shorter than the index says)"
                    )
                digest = decode_record(buf, key, where, self.out_dtype, self.device)
                if digest is not None:
                    self._remember(key, digest)
                out[key] = digest
        return [out[k] for k in keys]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __len__(self) -> int:
        """Digests held (index entries)."""
        return self._backend.count()

    def keys(self) -> Iterator[str]:
        """Every key held, in sorted order."""
        return self._backend.keys()

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def put(self, digest: Digest) -> str:
        """Store `digest` and return its key; on return the write is committed (see the module docstring)."""
        return self.put_many([digest])[0]

    def put_many(self, digests: Iterable[Digest]) -> list[str]:
        """Store `digests` in one write (one lock, one index transaction) and return their keys, in order."""
        self._check_writable()
        digests = list(digests)
        for d in digests:
            if not isinstance(d, Digest):
                raise TypeError(f"put() takes a Digest, got {type(d).__name__}")
            d.validate()
        keys = [digest_key(d) for d in digests]
        if not digests:
            return keys
        records = {k: encode_record(d, self.codec) for k, d in zip(keys, digests, strict=True)}
        self._backend.put_records(list(records.items()))
        lossless = self.codec == "bf16" and self.out_dtype in (None, torch.bfloat16)
        with self._lock:
            for k, d in zip(keys, digests, strict=True):
                if lossless and d.embeddings.dtype == torch.bfloat16:
                    self._remember(k, d if self.device == d.embeddings.device else d.to(self.device))
                else:  # what a read returns is the stored (rounded) form: the next read decodes it
                    self._cache.pop(k, None)
        return keys

    def delete(self, key: str | Iterable[str]) -> int:
        """Remove `key` (or each of several keys); returns how many were held. Space comes back at :meth:`compact`."""
        self._check_writable()
        keys = [key] if isinstance(key, str) else list(key)
        with self._lock:
            for k in keys:
                self._cache.pop(k, None)
        return self._backend.delete([k for k in keys if isinstance(k, str) and _KEY_RE.fullmatch(k)])

    def verify(self, batch: int = 256) -> dict[str, Any]:
        """Read every record with all of its checks (bypassing the memory cache); returns the number sound and the
        keys of the damaged ones (delete or put them again)."""
        keys, ok, damaged = list(self.keys()), 0, []
        for lo in range(0, len(keys), batch):
            for key in keys[lo : lo + batch]:
                try:
                    found = self._backend.records([key]).get(key)
                    if found is None or found[0] is None:
                        raise InvalidDigestError(f"record of {key} is missing")
                    if decode_record(found[0], key, found[1], self.out_dtype, torch.device("cpu")) is None:
                        raise InvalidDigestError(f"record of {key} holds another key's digest")
                    ok += 1
                except InvalidDigestError:
                    damaged.append(key)
        return {"ok": ok, "damaged": damaged}

    def _check_writable(self) -> None:
        if self.readonly:
            raise PermissionError(f"{self!r} was opened readonly")


class PackedDigestStore(_RecordStore):
    """Digests by key in one folder of packed shards (see the module docstring).

    Args:
        path: the store's folder (created if missing).
        dtype: how vectors are stored: ``"bf16"`` (default), ``"int8"`` or ``"fp8"`` (:mod:`icformer_rag.quantize`).
            Records of every codec can be read whatever this is: it applies to writes.
        out_dtype: the dtype digests are read back in (the LLM's); None: the dtype each digest was put in.
        backend: ``"shards"`` (default: shard files + SQLite index, standard library only) or ``"lmdb"``.
        device: where digests that are read are put.
        max_cached: most digests kept in memory (least recently used go first; they stay on disk).
        sync: fsync every write before it returns (survives power loss, not only a crash of the process).
        shard_bytes: a shard file's size before the next one is started (shards backend).
        map_size: LMDB's map size (virtual address space, not disk).
        lock_timeout: seconds a write waits for another process's write to finish.
        readonly: refuse writes (a reader process).

    Thread-safe; any number of processes may read while one writes.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        dtype: str | torch.dtype = quantize.DEFAULT_CODEC,
        out_dtype: torch.dtype | None = None,
        backend: str = "shards",
        device: str | torch.device = "cpu",
        max_cached: int | None = 4096,
        sync: bool = False,
        shard_bytes: int = 1 << 30,
        map_size: int = 1 << 40,
        lock_timeout: float = 60.0,
        readonly: bool = False,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        self._configure(dtype, out_dtype, device, max_cached, readonly)
        self.folder = Path(path)
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = self.folder / _FORMAT_FILE
        found = marker.read_text().split() if marker.is_file() else None
        if found and (found[0] != _FORMAT or found[1] != backend):
            raise ValueError(f"{self.folder} holds a {' '.join(found)} store, not a {_FORMAT} {backend} one")
        if not found:
            if any(self.folder.glob("*.digest.safetensors")):
                raise ValueError(f"{self.folder} is a DigestStore folder: migrate it with migrate_folder()")
            marker.write_text(f"{_FORMAT} {backend}\n")
        self.backend = backend
        if backend == "shards":
            self._backend = _ShardBackend(self.folder, sync=sync, shard_bytes=shard_bytes, lock_timeout=lock_timeout)
        else:
            self._backend = _LMDBBackend(self.folder, sync=sync, map_size=map_size, lock_timeout=lock_timeout)

    def __repr__(self) -> str:
        return f"PackedDigestStore({self.folder}, {self.backend}, {self.codec}, {len(self._cache)} cached)"

    def compact(self, min_dead_fraction: float = 0.0) -> dict[str, int]:
        """Reclaim the space of deleted and replaced digests (and of torn tails); returns what it did."""
        self._check_writable()
        return self._backend.compact(min_dead_fraction)

    def disk_bytes(self) -> int:
        """Bytes the store takes on disk (shards and index, or LMDB's data file)."""
        return self._backend.disk_bytes()


# -------------------------------------------------------------------------------------------------- migration
def migrate_folder(
    folder: str | Path, store: PackedDigestStore, *, batch: int = 256, remove: bool = False
) -> dict[str, Any]:
    """Copy every digest file of a :class:`DigestStore` folder into `store`, `batch` digests per write.

    Each file is read with :meth:`Digest.load` (all of its checks) and must match the key in its name; damaged
    files and files that are not digests are skipped and listed, never copied. With `remove`, each file is unlinked
    once its digest is committed to `store`. Rerunning it is harmless (a key already held is rewritten).
    """
    folder = Path(folder)
    suffix = ".digest.safetensors"
    result: dict[str, Any] = {"migrated": 0, "damaged": [], "not_digests": []}
    pending: list[tuple[Path, Digest]] = []

    def flush() -> None:
        store.put_many(d for _, d in pending)
        result["migrated"] += len(pending)
        if remove:
            for p, _ in pending:
                p.unlink(missing_ok=True)
        pending.clear()

    for path in sorted(folder.glob(f"*{suffix}")):
        key = path.name[: -len(suffix)]
        try:
            digest = Digest.load(path)
        except InvalidDigestError as err:
            result["damaged"].append(f"{path}: {err}")
            continue
        except (ValueError, OSError, KeyError):
            result["not_digests"].append(str(path))
            continue
        if len(key) != KEY_CHARS or digest_key(digest) != key:
            result["not_digests"].append(str(path))
            continue
        pending.append((path, digest))
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    return result
