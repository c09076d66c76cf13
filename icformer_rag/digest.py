"""Digest: the compressed form of one document, as the LLM will read it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


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
        if self.embeddings.dim() != 2:
            raise ValueError(f"digest embeddings must be (M, C), got shape {tuple(self.embeddings.shape)}")
        if self.window_digests and sum(self.window_digests) != self.embeddings.shape[0]:
            raise ValueError("window_digests does not add up to the number of digest vectors")

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
        """Write one safetensors file: the vectors, and the rest as string metadata."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": "icformer-rag.digest.v1",
            "num_tokens": str(self.num_tokens),
            "content_hash": self.content_hash,
            "fingerprint": self.fingerprint,
            "window_digests": json.dumps(self.window_digests),
        }
        save_file({"embeddings": self.embeddings.detach().contiguous().cpu()}, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> Digest:
        from safetensors import safe_open

        if not Path(path).is_file():
            raise FileNotFoundError(f"no digest file at {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                keys = set(f.keys())
        except Exception as err:  # safetensors raises its own error type for a file that is not safetensors
            raise ValueError(f"{path} is not an icformer-rag digest file (not safetensors: {err})") from err
        if meta.get("format") != "icformer-rag.digest.v1" or "embeddings" not in keys:
            raise ValueError(f"{path} is not an icformer-rag digest file")
        tensors = load_file(str(path), device=str(device))
        return cls(
            embeddings=tensors["embeddings"],
            num_tokens=int(meta["num_tokens"]),
            content_hash=meta["content_hash"],
            fingerprint=meta["fingerprint"],
            window_digests=json.loads(meta.get("window_digests", "[]")),
        )
