"""Configuration of an IC-Former compressor and the signature of the LLM it was trained for."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DIGEST_POSITIONS = ("spread", "after")
ENCODERS = ("icformer", "llm")


def from_known_fields(cls: Any, data: dict[str, Any]) -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown keys (a typo must not be silently ignored)."""
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**data)


@dataclass
class LLMSignature:
    """Identifies the frozen LLM a compressor reads the embeddings of and writes digests for.

    Digests only make sense for the exact embedding space they were trained against, so a checkpoint
    records this and refuses to load against another LLM. The probe is a few values of the embedding
    table compared with a tolerance, so the same LLM loaded in fp32, bf16 or fp16 still matches.
    """

    name: str = field(default="", metadata={"help": "Name or path the LLM was loaded from."})
    hidden_size: int = field(default=0, metadata={"help": "Width of the LLM's input embeddings."})
    vocab_size: int = field(default=0, metadata={"help": "Rows of the LLM's input-embedding table."})
    embedding_sha256: str = field(
        default="", metadata={"help": "sha256 of the input-embedding table cast to bf16 (same for fp32/bf16 loads)."}
    )
    embedding_probe: list[float] = field(
        default_factory=list, metadata={"help": "Embedding values at fixed (row, column) places."}
    )

    def describe(self) -> str:
        return f"{self.name or '?'} (hidden {self.hidden_size}, vocab {self.vocab_size})"

    def mismatch(self, other: LLMSignature, rtol: float = 2e-2, atol: float = 2e-3) -> str | None:
        """Return why `other` is not the LLM this signature describes, or None when it is."""
        if self.hidden_size != other.hidden_size:
            return f"hidden size {other.hidden_size} != {self.hidden_size}"
        if self.vocab_size != other.vocab_size:
            return f"vocabulary size {other.vocab_size} != {self.vocab_size}"
        if self.embedding_sha256 and self.embedding_sha256 == other.embedding_sha256:
            return None
        # Hashes can differ for the same model loaded in fp16 (bf16 values that fp16 cannot hold): the probe,
        # compared with a tolerance, decides.
        if self.embedding_probe and other.embedding_probe:
            if len(self.embedding_probe) != len(other.embedding_probe):
                return "embedding probes of different lengths"
            pairs = zip(self.embedding_probe, other.embedding_probe, strict=True)
            bad = sum(abs(a - b) > atol + rtol * abs(a) for a, b in pairs)
            # A few values may round differently between dtypes; a different model differs almost everywhere.
            if bad > len(self.embedding_probe) // 10:
                return f"input-embedding table differs ({bad}/{len(self.embedding_probe)} probe values)"
        return None


@dataclass
class ICFormerConfig:
    """Shape of an IC-Former compressor (arXiv 2406.13618).

    Defaults follow the paper: 3 cross-attention blocks as wide as the LLM, 128 digests per 512-token
    window (4x compression). Use :meth:`for_llm` to take width, heads, MLP size and RoPE base from an
    LLM's own config.
    """

    hidden_size: int = field(default=576, metadata={"help": "Width of the LLM's input embeddings."})
    num_blocks: int = field(default=3, metadata={"help": "Number of cross-attention blocks."})
    num_heads: int = field(default=9, metadata={"help": "Attention heads per block."})
    intermediate_size: int = field(default=1536, metadata={"help": "Hidden width of the SwiGLU MLP."})
    num_digest_tokens: int = field(default=128, metadata={"help": "Digest tokens (k) per full window."})
    window_tokens: int = field(default=512, metadata={"help": "Context tokens per window."})
    rope_theta: float = field(default=10000.0, metadata={"help": "RoPE base."})
    rms_norm_eps: float = field(default=1e-5, metadata={"help": "Epsilon of every RMSNorm."})
    num_special_tokens: int = field(
        default=3, metadata={"help": "Learned embeddings: context begin, context end, auto-encoding token."}
    )
    chunk_queries: bool = field(
        default=False,
        metadata={
            "help": "Start digest j's query from a learned projection of the `ratio` context tokens it stands for "
            "(a strided patch embedding, O(n)) before the cross-attention blocks refine it; False = the paper's "
            "content-free digest queries."
        },
    )
    local_heads: int = field(
        default=0,
        metadata={
            "help": "Heads per block whose attention to the context decays with the distance between the digest's "
            "and the token's position (learned ALiBi-style slopes): a locality prior RoPE alone does not give."
        },
    )
    context_layers: int = field(
        default=0,
        metadata={
            "help": "Self-attention layers over each window's word embeddings before the digests read them, so "
            "keys and values see their neighbours (contextual token features; cost stays linear in n, windows "
            "are independent). Their output projections start at zero: a checkpoint without them extends exactly."
        },
    )
    digest_positions: str = field(
        default="spread",
        metadata={
            "help": "RoPE positions of the digests: 'spread' puts digest j at the centre of the context tokens "
            "it replaces (ratio*j .. ratio*j+ratio-1); 'after' puts it at n + j, after the context, as the paper."
        },
    )
    encoder: str = field(
        default="icformer",
        metadata={
            "help": "'icformer': the cross-attention blocks over word embeddings (never runs the LLM); 'llm': the "
            "ICAE-style encoder, the LLM itself with a LoRA adapter reading each window and k memory tokens "
            "(icformer_rag.llm_encoder; the blocks and context-layer fields are then unused)."
        },
    )
    encoder_rank: int = field(default=16, metadata={"help": "LoRA rank of an 'llm' encoder's adapter."})
    encoder_alpha: int = field(default=32, metadata={"help": "LoRA alpha of an 'llm' encoder's adapter."})
    llm: LLMSignature = field(default_factory=LLMSignature, metadata={"help": "The LLM this compressor serves."})

    def __post_init__(self) -> None:
        if isinstance(self.llm, dict):
            self.llm = LLMSignature(**self.llm)
        for name in (
            "hidden_size",
            "num_blocks",
            "num_heads",
            "intermediate_size",
            "num_digest_tokens",
            "window_tokens",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ICFormerConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError("the head dimension must be even for RoPE")
        if self.window_tokens % self.num_digest_tokens:
            raise ValueError(
                f"window_tokens {self.window_tokens} must be a multiple of num_digest_tokens "
                f"{self.num_digest_tokens} (the compression ratio is an integer)"
            )
        if self.num_special_tokens < 3:
            raise ValueError("num_special_tokens must be at least 3")
        if not isinstance(self.local_heads, int) or not 0 <= self.local_heads <= self.num_heads:
            raise ValueError(f"local_heads must be in [0, num_heads={self.num_heads}], got {self.local_heads!r}")
        if not isinstance(self.context_layers, int) or self.context_layers < 0:
            raise ValueError(f"context_layers must be a non-negative integer, got {self.context_layers!r}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        for name in ("encoder_rank", "encoder_alpha"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ICFormerConfig.{name} must be a positive integer, got {value!r}")
        if self.digest_positions not in DIGEST_POSITIONS:
            raise ValueError(f"digest_positions must be one of {DIGEST_POSITIONS}, got {self.digest_positions!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def ratio(self) -> int:
        """Context tokens per digest (4 by default)."""
        return self.window_tokens // self.num_digest_tokens

    def digests_for(self, num_tokens: int) -> int:
        """Digests for one window of `num_tokens` tokens: ceil(t / ratio), so nothing is ever expanded."""
        return math.ceil(num_tokens / self.ratio)

    @classmethod
    def for_llm(cls, llm_config: Any, **overrides: Any) -> ICFormerConfig:
        """Take width, heads, MLP size and RoPE base from a transformers config (Llama-like or not)."""
        text_config = getattr(llm_config, "get_text_config", lambda: llm_config)()
        hidden = int(text_config.hidden_size)
        heads = int(getattr(text_config, "num_attention_heads", max(1, hidden // 64)))
        if hidden % heads or (hidden // heads) % 2:
            heads = max(1, hidden // 64)
        rope_theta = getattr(text_config, "rope_theta", None)
        rope_params = getattr(text_config, "rope_parameters", None) or {}
        if rope_theta is None and isinstance(rope_params, dict):
            rope_theta = rope_params.get("rope_theta")
        values: dict[str, Any] = dict(
            hidden_size=hidden,
            num_heads=heads,
            intermediate_size=int(getattr(text_config, "intermediate_size", 4 * hidden)),
            rope_theta=float(rope_theta or 10000.0),
            rms_norm_eps=float(getattr(text_config, "rms_norm_eps", 1e-5)),
        )
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ICFormerConfig:
        # Checkpoints written before these fields existed were trained with the paper's layout.
        return from_known_fields(cls, {"digest_positions": "after", "chunk_queries": False, "local_heads": 0, **data})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ICFormerConfig:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no {CONFIG_NAME} in {directory}")
        return cls.from_dict(json.loads(path.read_text()))
