"""DigestStore: digests computed once and reused, keyed by the text's hash and the compressor's fingerprint.

A key names one (text, compressor) pair, so a digest made by another compressor, or for another text, can never
be served under it: every entry read back (from memory or disk) is checked against its key before it is
returned. Every entry is also checked for what the LLM would read (floating dtype, shape, finite values, and on
disk the vectors' saved sha256): a damaged one raises :class:`InvalidDigestError` naming the key and the file,
it is never a hit. On disk each digest is one safetensors file `<key>.digest.safetensors` (see :meth:`Digest.save`),
written atomically, so a crash or a concurrent writer never leaves a half-written digest behind.

Markers are short texts that stand for a digest inside ordinary prompt text (``⟦icf:<key>.<tag>⟧``): adapters put
them where a document's text would go, and :meth:`SoftPromptLM.build_chat_inputs` swaps each for its digest vectors.
Their syntax is :mod:`icformer_rag.prompt`'s (re-exported here): the tag is an HMAC of the key under a secret of this
process, so only markers that code of this process made are read as digests, never marker-looking text.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .digest import Digest, InvalidDigestError, content_hash
from .prompt import (  # the marker syntax, re-exported: prompt.py owns it
    _KEY_RE,
    KEY_CHARS,
    MARKER_CLOSE,
    MARKER_OPEN,
    MARKER_RE,
    find_markers,
    marker_for,
    split_markers,
)

if TYPE_CHECKING:
    from .compressor import ContextCompressor

__all__ = [
    "KEY_CHARS",
    "MARKER_CLOSE",
    "MARKER_OPEN",
    "MARKER_RE",
    "BaseDigestStore",
    "DigestStore",
    "InvalidDigestError",
    "digest_key",
    "find_markers",
    "key_for",
    "key_for_hash",
    "marker_for",
    "split_markers",
]

_SUFFIX = ".digest.safetensors"


def key_for_hash(text_hash: str, fingerprint: str) -> str:
    """Store key of the digest of the text with sha256 `text_hash`, made by compressor `fingerprint`."""
    return hashlib.sha256(f"{fingerprint}:{text_hash}".encode()).hexdigest()[:KEY_CHARS]


def key_for(text: str, fingerprint: str) -> str:
    """Store key of the digest of `text` made by the compressor with `fingerprint`."""
    return key_for_hash(content_hash(text), fingerprint)


def digest_key(digest: Digest) -> str:
    """The key a digest is stored under."""
    return key_for_hash(digest.content_hash, digest.fingerprint)


class BaseDigestStore:
    """What every digest store is (:class:`DigestStore`, :class:`~icformer_rag.packed_store.PackedDigestStore`,
    :class:`~icformer_rag.kv_store.KVDigestStore`): `get` / `get_many` / `put` / `put_many` by key, and what they
    share over their own `get_many` / `put_many`: the in-memory LRU of recent digests (`_cache`, `_lock`,
    `max_cached` set by the store) and compression through the store (:meth:`compress_cached`). Code that takes
    any digest store can check ``isinstance(store, BaseDigestStore)``."""

    _cache: OrderedDict[str, Digest]
    _lock: threading.RLock | threading.Lock
    max_cached: int | None

    def get(self, key: str) -> Digest | None:
        raise NotImplementedError

    def put(self, digest: Digest) -> str:
        raise NotImplementedError

    def get_many(self, keys: Sequence[str]) -> list[Digest | None]:
        raise NotImplementedError

    def put_many(self, digests: Sequence[Digest]) -> list[str]:
        raise NotImplementedError

    def _cached(self, key: str) -> Digest | None:
        """The digest under `key` in the memory cache, checked, or None. Cached objects are the caller's too and can
        be changed in place after put(): checked on every read (values only; a checksum guards stored bytes)."""
        with self._lock:
            digest = self._cache.get(key)
            if digest is not None:
                self._cache.move_to_end(key)
        if digest is None:
            return None
        try:
            digest.validate()
        except InvalidDigestError as err:
            with self._lock:  # not kept: a later read goes to the stored copy, which is checked on its own
                if self._cache.get(key) is digest:
                    del self._cache[key]
            raise InvalidDigestError(
                f"stored digest {key} was changed in memory and will not be served: {err}"
            ) from err
        return digest

    def _remember(self, key: str, digest: Digest) -> None:
        with self._lock:
            self._cache[key] = digest
            self._cache.move_to_end(key)
            while self.max_cached is not None and len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)

    def compress_cached(
        self, compressor: ContextCompressor, texts: Sequence[str], show_progress: bool = False
    ) -> tuple[list[Digest], list[bool]]:
        """Digests of `texts` by `compressor`, in order, and whether each came from the store.

        Only the misses are compressed, all in one batched call (a text repeated in `texts` once), and
        stored. Returns `(digests, hits)`.
        """
        from .compressor import _check_texts

        texts = _check_texts(texts)
        fingerprint = compressor.fingerprint
        keys = [key_for(t, fingerprint) for t in texts]
        unique = list(dict.fromkeys(keys))
        found = {k: d for k, d in zip(unique, self.get_many(unique), strict=True) if d is not None}
        for k, d in found.items():
            _check_shape(k, d, compressor)
        misses = list(dict.fromkeys(t for t, k in zip(texts, keys, strict=True) if k not in found))
        made = compressor.compress(misses, show_progress=show_progress) if misses else []
        fresh = dict(zip(self.put_many(made), made, strict=True))
        return [found[k] if k in found else fresh[k] for k in keys], [k in found for k in keys]


class DigestStore(BaseDigestStore):
    """Digests by key, in memory and (when `folder` is given) on disk.

    Args:
        folder: where digest files live; None keeps everything in memory only (lost with the object).
        device: where digests read from disk are put.
        max_cached: most digests kept in memory for a disk-backed store (least recently used go first;
            they stay on disk). A memory-only store never evicts.

    Thread-safe: one lock guards the memory cache; files are written under a unique temporary name and
    renamed into place, so readers only ever see complete files.
    """

    def __init__(
        self, folder: str | Path | None = None, *, device: str | torch.device = "cpu", max_cached: int | None = 4096
    ) -> None:
        if max_cached is not None and max_cached < 1:
            raise ValueError("max_cached must be positive or None")
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(device)
        self.max_cached = max_cached if self.folder is not None else None
        self._cache: OrderedDict[str, Digest] = OrderedDict()
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        where = str(self.folder) if self.folder is not None else "memory"
        return f"DigestStore({where}, {len(self._cache)} cached)"

    def path_for(self, key: str) -> Path | None:
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key):  # it becomes a file name
            raise ValueError(f"not a digest key: {key!r} (expected {KEY_CHARS} lowercase hex digits)")
        return self.folder / f"{key}{_SUFFIX}" if self.folder is not None else None

    # ------------------------------------------------------------------------------------------- access
    def get(self, key: str) -> Digest | None:
        """The digest stored under `key`, or None. An entry that does not match its key (another compressor,
        another text) or a file that is no digest file at all is never returned (a miss: the next put overwrites
        it).

        Raises:
            InvalidDigestError: the entry is a digest whose contents cannot be trusted (NaN/inf values, a
                non-floating dtype, a shape that contradicts its metadata, vectors that fail their saved sha256).
                Serving it would give empty or garbage answers silently; the message names the file to remove.
        """
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
            return None
        digest = self._cached(key)
        if digest is not None:
            return digest
        path = self.path_for(key)
        if path is None or not path.is_file():
            return None
        try:
            digest = Digest.load(path, device=self.device)
        except InvalidDigestError as err:
            raise InvalidDigestError(
                f"stored digest {key} is damaged and will not be served: {err}. Remove {path} to recompute it."
            ) from err
        except (ValueError, OSError, KeyError):
            return None  # not a digest file (garbage, another format): a miss; the next put overwrites it
        if digest_key(digest) != key:
            return None
        self._remember(key, digest)
        return digest

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __len__(self) -> int:
        """Digests held: files on disk for a disk-backed store, else entries in memory."""
        if self.folder is not None:
            # Only files named by a key: `compress --out` links each digest under its document's name as well.
            return sum(1 for f in self.folder.glob(f"*{_SUFFIX}") if _KEY_RE.fullmatch(f.name[: -len(_SUFFIX)]))
        with self._lock:
            return len(self._cache)

    def put(self, digest: Digest) -> str:
        """Store `digest` (in memory, and atomically on disk) and return its key."""
        if not isinstance(digest, Digest):
            raise TypeError(f"put() takes a Digest, got {type(digest).__name__}")
        digest.validate()  # a NaN or integer digest must not enter the store (it would only fail on every read)
        key = digest_key(digest)
        path = self.path_for(key)
        if path is not None:
            tmp = path.with_name(f".{key}.{uuid.uuid4().hex}.tmp")
            try:
                digest.save(tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        self._remember(key, digest)
        return key

    def get_many(self, keys: Sequence[str]) -> list[Digest | None]:
        """The digests under `keys`, in order (None for a miss)."""
        return [self.get(k) for k in keys]

    def put_many(self, digests: Sequence[Digest]) -> list[str]:
        """Store each of `digests`; their keys, in order."""
        return [self.put(d) for d in digests]


def _check_shape(key: str, digest: Digest, compressor: ContextCompressor) -> None:
    """Raise InvalidDigestError unless a stored digest has the shape `compressor` gives its text: its width, and
    one vector count per window of `num_tokens` tokens. The key vouches for the text and the compressor, not for
    the vectors: a file edited with consistent metadata and checksum would still pass :meth:`Digest.validate`."""
    cfg = compressor.config
    full, rest = divmod(digest.num_tokens, cfg.window_tokens)
    counts = [cfg.digests_for(cfg.window_tokens)] * full + ([cfg.digests_for(rest)] if rest else [])
    if digest.embeddings.shape[1] != cfg.hidden_size or len(digest) != sum(counts):
        raise InvalidDigestError(
            f"stored digest {key} is damaged and will not be served: {tuple(digest.embeddings.shape)} vectors for "
            f"{digest.num_tokens} tokens, where this compressor gives ({sum(counts)}, {cfg.hidden_size})"
        )
