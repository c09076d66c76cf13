"""KVDigestStore: digests in a key-value store that LangChain or LlamaIndex already has (issue 17).

The same interface and guarantees as :class:`~icformer_rag.packed_store.PackedDigestStore` (it shares its code:
the keys tied to the text and the compressor's fingerprint, the self-checking records with their CRC-32, the
storage dtypes ``bf16`` / ``int8`` / ``fp8``, the in-memory LRU, :meth:`compress_cached`), over either of

- a LangChain ``BaseStore[str, bytes]`` (a ``ByteStore``: ``InMemoryByteStore``, ``LocalFileStore``, ``RedisStore``
  ...): one value per digest, its record's bytes, under the key ``"<namespace>/<digest key>"``;
- a LlamaIndex ``BaseKVStore`` (``SimpleKVStore``, the kv store under a ``StorageContext``'s docstore, Redis,
  MongoDB ...): one JSON value per digest, ``{"format": ..., "record": <the record, base64>}``, in the collection
  ``namespace``, beside whatever else the store holds.

Neither package is imported here: the store passed in is recognised by its methods. A value under a digest key
that is not a sound record (torn by a crash mid-write, edited, written by something else) raises
:class:`InvalidDigestError` naming the key; it is never served. A missing key is a miss (None), as in
:class:`~icformer_rag.store.DigestStore`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from . import quantize
from .digest import InvalidDigestError
from .packed_store import _RecordStore
from .store import _KEY_RE

__all__ = ["DEFAULT_NAMESPACE", "KVDigestStore"]

DEFAULT_NAMESPACE = "icformer_digests"
_JSON_FORMAT = "icformer-rag.digest-record.v1"  # the "format" of a LlamaIndex value holding one record
_BYTE_STORE_METHODS = ("mget", "mset", "mdelete", "yield_keys")
_KV_STORE_METHODS = ("put", "get", "delete", "get_all", "put_all")


def _not_a_record(key: str, where: str, why: str) -> InvalidDigestError:
    return InvalidDigestError(
        f"stored digest {key} is damaged and will not be served: the value is not a digest record ({why}; "
        f"{where}). Delete it to recompute the digest, or give this store another namespace."
    )


class _ByteStoreBackend:
    """Records as the values of a LangChain ``BaseStore[str, bytes]``, under ``"<namespace>/<key>"``."""

    def __init__(self, kv: Any, namespace: str) -> None:
        self.kv = kv
        self.prefix = f"{namespace}/"

    def records(self, keys: Sequence[str]) -> dict[str, tuple[bytearray, str]]:
        out = {}
        for key, value in zip(keys, self.kv.mget([self.prefix + k for k in keys]), strict=True):
            if value is None:
                continue
            where = f"{type(self.kv).__name__} key {self.prefix + key!r}"
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise _not_a_record(key, where, f"a {type(value).__name__}, not bytes")
            out[key] = (bytearray(value), where)  # a writable copy: the digest's vectors may stay in it
        return out

    def put_records(self, records: Sequence[tuple[str, bytearray]]) -> None:
        self.kv.mset([(self.prefix + k, bytes(rec)) for k, rec in records])

    def delete(self, keys: Sequence[str]) -> int:
        names = [self.prefix + k for k in keys]
        held = [n for n, v in zip(names, self.kv.mget(names), strict=True) if v is not None]
        if held:
            self.kv.mdelete(held)
        return len(held)

    def keys(self) -> Iterator[str]:
        names = (str(k) for k in self.kv.yield_keys(prefix=self.prefix))
        keys = (n[len(self.prefix) :] for n in names if n.startswith(self.prefix))
        return iter(sorted(k for k in keys if _KEY_RE.fullmatch(k)))

    def count(self) -> int:
        return sum(1 for _ in self.keys())

    def close(self) -> None:
        """Nothing to release: the key-value store is the caller's."""


class _KVStoreBackend:
    """Records as JSON values (base64) of a LlamaIndex ``BaseKVStore``, in collection `namespace`."""

    def __init__(self, kv: Any, namespace: str) -> None:
        self.kv = kv
        self.collection = namespace

    def records(self, keys: Sequence[str]) -> dict[str, tuple[bytearray, str]]:
        out = {}
        for key in keys:
            value = self.kv.get(key, collection=self.collection)
            if value is None:
                continue
            where = f"{type(self.kv).__name__} collection {self.collection!r}"
            if not isinstance(value, dict) or value.get("format") != _JSON_FORMAT:
                raise _not_a_record(key, where, f"no {_JSON_FORMAT!r} format field")
            try:
                out[key] = (bytearray(base64.b64decode(value.get("record", ""), validate=True)), where)
            except (binascii.Error, TypeError, ValueError) as err:
                raise _not_a_record(key, where, f"its record is not base64: {err}") from err
        return out

    def put_records(self, records: Sequence[tuple[str, bytearray]]) -> None:
        values = [(k, {"format": _JSON_FORMAT, "record": base64.b64encode(rec).decode("ascii")}) for k, rec in records]
        self.kv.put_all(values, collection=self.collection)

    def delete(self, keys: Sequence[str]) -> int:
        return sum(bool(self.kv.delete(k, collection=self.collection)) for k in keys)

    def keys(self) -> Iterator[str]:
        return iter(sorted(k for k in self.kv.get_all(collection=self.collection) if _KEY_RE.fullmatch(k)))

    def count(self) -> int:
        return sum(1 for _ in self.keys())

    def close(self) -> None:
        """Nothing to release: the key-value store is the caller's."""


class KVDigestStore(_RecordStore):
    """Digests by key in a LangChain ``ByteStore`` or a LlamaIndex ``BaseKVStore`` (see the module docstring).

    Args:
        kv: a LangChain ``BaseStore[str, bytes]`` (``mget`` / ``mset`` / ``mdelete`` / ``yield_keys``) or a
            LlamaIndex ``BaseKVStore`` (``put`` / ``get`` / ``delete`` / ``get_all`` / ``put_all``).
        namespace: where in `kv` the digests are: the key prefix ``"<namespace>/"`` of a ``ByteStore`` (with
            ``LocalFileStore``, a subfolder), the collection of a ``BaseKVStore``.
        dtype: how vectors are stored: ``"bf16"`` (default), ``"int8"`` or ``"fp8"`` (:mod:`icformer_rag.quantize`);
            records of every dtype are read whatever this is.
        out_dtype: the dtype digests are read back in (the LLM's); None: the dtype each digest was put in.
        device: where digests that are read are put.
        max_cached: most digests kept in memory (least recently used go first; they stay in `kv`).
        readonly: refuse writes.

    Thread-safe as far as `kv` is. `len()` and :meth:`keys` list the whole namespace (a scan for a remote store).
    """

    folder = None  # no folder of its own: the digests live in `kv` (what code asking a store for its folder sees)

    def __init__(
        self,
        kv: Any,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        dtype: str | torch.dtype = quantize.DEFAULT_CODEC,
        out_dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        max_cached: int | None = 4096,
        readonly: bool = False,
    ) -> None:
        if not isinstance(namespace, str) or not namespace or namespace.endswith("/"):
            raise ValueError(f"namespace must be a non-empty string not ending in '/', got {namespace!r}")
        if all(callable(getattr(kv, m, None)) for m in _BYTE_STORE_METHODS):
            backend: Any = _ByteStoreBackend(kv, namespace)
        elif all(callable(getattr(kv, m, None)) for m in _KV_STORE_METHODS):
            backend = _KVStoreBackend(kv, namespace)
        else:
            raise TypeError(
                f"KVDigestStore takes a LangChain ByteStore ({'/'.join(_BYTE_STORE_METHODS)}) or a LlamaIndex "
                f"BaseKVStore ({'/'.join(_KV_STORE_METHODS)}), got {type(kv).__name__}. For a StorageContext, "
                "pass the kv store its docstore is built on: SimpleDocumentStore(simple_kvstore=kv)."
            )
        self._configure(dtype, out_dtype, device, max_cached, readonly)
        self.kv = kv
        self.namespace = namespace
        self._backend = backend

    def __repr__(self) -> str:
        return f"KVDigestStore({type(self.kv).__name__}, {self.namespace!r}, {self.codec}, {len(self._cache)} cached)"
