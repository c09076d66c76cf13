"""Digest: the compressed form of one document, as the LLM will read it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

DIGEST_FORMAT = "icformer-rag.digest.v1"
# Digest vectors are read as LLM input embeddings: only real floating types mean anything there (an int or bool
# tensor would be cast silently into nonsense).
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_SAFETENSORS_FLOATS = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


class InvalidDigestError(ValueError):
    """A digest whose contents cannot be trusted: wrong dtype or shape, NaN/inf values, metadata that does not
    fit the vectors, or vectors whose checksum differs from the one saved with them. Never to be served."""


def vectors_sha256(embeddings: torch.Tensor) -> str:
    """sha256 of the vectors' bytes exactly as stored (their dtype, row-major): the checksum a digest file keeps."""
    data = embeddings.detach().contiguous().cpu()
    return hashlib.sha256(data.view(torch.uint8).numpy().tobytes()).hexdigest()


def content_hash(text: str) -> str:
    """sha256 of the document's UTF-8 text: the key that ties a digest to the text it came from."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Digest:
    """Digest vectors of one document.

    Attributes:
        embeddings: (M, C) vectors in the LLM's input-embedding space, all windows concatenated.
        num_tokens: tokens of the source text (M is about num_tokens / ratio).
        content_hash: sha256 of the source text.
        fingerprint: fingerprint of the compressor that made it; digests from another compressor
            (or for another LLM) mean nothing to this one's LLM.
        window_digests: digests per window, in order (their sum is M).
    """

    embeddings: torch.Tensor
    num_tokens: int
    content_hash: str
    fingerprint: str
    window_digests: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Cheap checks only (no pass over the values, no GPU sync): every compress() builds digests. The values
        # are checked by `validate`, which loading and the store run.
        if not isinstance(self.embeddings, torch.Tensor):
            raise TypeError(f"digest embeddings must be a torch.Tensor, got {type(self.embeddings).__name__}")
        if self.embeddings.dim() != 2:
            raise ValueError(f"digest embeddings must be (M, C), got shape {tuple(self.embeddings.shape)}")
        if self.embeddings.dtype not in FLOAT_DTYPES:
            raise InvalidDigestError(
                f"digest embeddings must be floating point ({', '.join(str(d) for d in FLOAT_DTYPES)}), "
                f"got {self.embeddings.dtype}"
            )
        if self.window_digests and sum(self.window_digests) != self.embeddings.shape[0]:
            raise ValueError("window_digests does not add up to the number of digest vectors")

    def validate(self, hidden_size: int | None = None) -> Digest:
        """Check what a reader of this digest relies on and return it; raise :class:`InvalidDigestError` if not.

        Floating dtype, shape (M, C) with C == `hidden_size` when given, `window_digests` non-negative integers
        adding up to M, `num_tokens` a non-negative integer, at least one token per digest vector, and every value
        finite (a NaN or inf vector gives empty or garbage answers, not an error, once the LLM reads it).
        """
        e = self.embeddings
        if not isinstance(e, torch.Tensor) or e.dim() != 2 or e.dtype not in FLOAT_DTYPES:
            what = f"{e.dtype} {tuple(e.shape)}" if isinstance(e, torch.Tensor) else type(e).__name__
            raise InvalidDigestError(f"digest vectors must be a floating (M, C) tensor, got {what}")
        if hidden_size is not None and e.shape[1] != hidden_size:
            raise InvalidDigestError(f"digest vectors are {e.shape[1]} wide, expected {hidden_size}")
        if not _is_count(self.num_tokens):
            raise InvalidDigestError(f"num_tokens must be a non-negative integer, got {self.num_tokens!r}")
        if not isinstance(self.window_digests, list) or not all(_is_count(n) for n in self.window_digests):
            raise InvalidDigestError(f"window_digests must be a list of counts, got {self.window_digests!r}")
        if self.window_digests and sum(self.window_digests) != e.shape[0]:
            raise InvalidDigestError(
                f"window_digests add up to {sum(self.window_digests)}, but there are {e.shape[0]} vectors"
            )
        # Each digest vector stands for at least one source token (ceil(t / ratio) <= t).
        if e.shape[0] > self.num_tokens:
            raise InvalidDigestError(f"{e.shape[0]} digest vectors for {self.num_tokens} source tokens")
        # A sum is finite only if every value is (NaN and inf propagate), and it is ~15x faster than isfinite on
        # the CPU; an infinite sum of finite values (overflow) falls through to the exact test.
        total = e.sum(dtype=torch.float32 if e.dtype == torch.float16 else None) if e.numel() else None
        if total is not None and not bool(torch.isfinite(total)) and not bool(torch.isfinite(e).all()):
            bad = int((~torch.isfinite(e)).sum())
            raise InvalidDigestError(f"digest vectors hold {bad} NaN or infinite values")
        return self

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    @property
    def compression(self) -> float:
        """Source tokens per digest vector."""
        return self.num_tokens / max(1, len(self))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Digest:
        return Digest(
            self.embeddings.to(device=device, dtype=dtype),
            self.num_tokens,
            self.content_hash,
            self.fingerprint,
            list(self.window_digests),
        )

    def save(self, path: str | Path) -> Path:
        """Write one safetensors file: the vectors, and the rest as string metadata, with the vectors' shape and
        sha256 so that :meth:`load` can tell a damaged file from a good one. A digest that fails
        :meth:`validate` is refused (:class:`InvalidDigestError`): no file that could not be read back is
        written."""
        self.validate()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        vectors = self.embeddings.detach().contiguous().cpu()
        meta = {
            "format": DIGEST_FORMAT,
            "num_tokens": str(self.num_tokens),
            "content_hash": self.content_hash,
            "fingerprint": self.fingerprint,
            "window_digests": json.dumps(self.window_digests),
            "shape": json.dumps(list(vectors.shape)),
            "embeddings_sha256": vectors_sha256(vectors),
        }
        save_file({"embeddings": vectors}, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> Digest:
        """Read a digest file written by :meth:`save`.

        Raises FileNotFoundError when there is no file, ValueError when it is not a digest file at all (not
        safetensors, another format tag, no `embeddings` tensor), and :class:`InvalidDigestError` (a ValueError)
        when it is one whose contents cannot be trusted: missing or malformed metadata, a non-floating dtype, a
        shape that differs from the one recorded, NaN/inf values, or vectors whose sha256 differs from the one
        saved with them (bit rot, a truncated copy, an edit). Files saved before the checksum existed still load;
        every other check applies to them.
        """
        from safetensors import safe_open

        if not Path(path).is_file():
            raise FileNotFoundError(f"no digest file at {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                keys = set(f.keys())
                # dtype and shape come from the header: a wrong one is refused before any data is read.
                header = f.get_slice("embeddings") if "embeddings" in keys else None
                dtype_name = header.get_dtype() if header is not None else None
                stored_shape = list(header.get_shape()) if header is not None else None
        except Exception as err:  # safetensors raises its own error type for a file that is not safetensors
            raise ValueError(f"{path} is not an icformer-rag digest file (not safetensors: {err})") from err
        if meta.get("format") != DIGEST_FORMAT or "embeddings" not in keys:
            raise ValueError(f"{path} is not an icformer-rag digest file")
        if dtype_name not in _SAFETENSORS_FLOATS:
            raise InvalidDigestError(f"digest file {path}: vectors are {dtype_name}, not floating point")
        num_tokens = _meta_field(path, meta, "num_tokens", int)
        window_digests = _meta_field(path, meta, "window_digests", json.loads, default=[])
        for name in ("content_hash", "fingerprint"):
            if not isinstance(meta.get(name), str) or not meta[name]:
                raise InvalidDigestError(f"digest file {path} lacks its {name!r} metadata")
        if "shape" in meta:
            recorded = _meta_field(path, meta, "shape", json.loads)
            if recorded != stored_shape:
                raise InvalidDigestError(f"digest file {path}: vectors are {stored_shape}, recorded as {recorded}")
        # Read on the CPU: the checksum is over the bytes as stored, before any move to a device.
        vectors = load_file(str(path), device="cpu")["embeddings"]
        checksum = meta.get("embeddings_sha256")
        if checksum is not None and vectors_sha256(vectors) != checksum:
            raise InvalidDigestError(
                f"digest file {path} is damaged: its vectors' sha256 {vectors_sha256(vectors)} differs from the "
                f"{checksum} saved with them"
            )
        try:
            digest = cls(
                embeddings=vectors,
                num_tokens=num_tokens,
                content_hash=meta["content_hash"],
                fingerprint=meta["fingerprint"],
                window_digests=window_digests,
            ).validate()
        except (TypeError, ValueError) as err:  # validate's, and the constructor's own (shape, window_digests)
            raise InvalidDigestError(f"digest file {path}: {err}") from err
        return digest.to(device=device) if torch.device(device) != vectors.device else digest


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _meta_field(path: str | Path, meta: dict[str, str], name: str, parse: Any, default: Any = None) -> Any:
    """Metadata field `name` of digest file `path`, parsed; a missing (without default) or unparseable one is an
    InvalidDigestError that names it, not a KeyError from deep inside."""
    if name not in meta:
        if default is not None:
            return default
        raise InvalidDigestError(f"digest file {path} lacks its {name!r} metadata")
    try:
        return parse(meta[name])
    except (TypeError, ValueError) as err:
        raise InvalidDigestError(f"digest file {path}: malformed {name!r} metadata {meta[name]!r:.60}") from err
