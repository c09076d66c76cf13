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
# Options removed from ICFormerConfig, with the value that meant "off": config.json files written while they existed
# hold them (at that value), and the fingerprint of every checkpoint was computed with them (see fingerprint_of).
REMOVED_CONFIG_FIELDS: dict[str, Any] = {"chunk_queries": False}


# Upper bounds of the config's sizes. An IC-Former is a small module beside its LLM: these leave room for any
# real LLM (hidden 8192, MLP 28672, ...) while a typo or a hostile config.json (intermediate_size 1e9: a 2.3 TB
# allocation) is refused before torch allocates anything.
_MAX_HIDDEN = 1 << 16
_MAX_INTERMEDIATE = 1 << 18
_MAX_BLOCKS = 128
_MAX_WINDOW = 1 << 17
_MAX_SPECIAL = 1024
_MAX_RANK = 4096
_MAX_ALPHA = 1 << 16
_MAX_PARAMETERS = 1 << 34  # ~17e9 parameters (68 GB in fp32): far above any compressor, far below a crash


def from_known_fields(cls: Any, data: dict[str, Any]) -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown keys (a typo must not be silently ignored)."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} must be given as a JSON object (dict), got {type(data).__name__}")
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**data)


def without_removed_fields(cls: Any, data: dict[str, Any], removed: dict[str, Any]) -> dict[str, Any]:
    """`data` without the keys of options that were removed (`removed`: name -> the value that meant "off").

    Files written while such an option existed hold its key, at its off value: those still load. A file that asks
    for the removed behaviour (any other value) is refused, naming the option, instead of loading as something it
    was not."""
    if not isinstance(data, dict):
        return data  # from_known_fields says what is wrong
    for name, off in removed.items():
        if name not in data:
            continue
        value = data[name]
        same_type = type(value) is type(off) or (type(off) is float and type(value) is int)
        if not (same_type and value == off):
            raise ValueError(
                f"{cls.__name__}.{name} is {value!r}, but the option {name!r} was removed (it lost its A/B, see "
                f"docs/training.md); only its off value {off!r} is accepted"
            )
    return {k: v for k, v in data.items() if k not in removed}


def _check_int(owner: str, name: str, value: Any, low: int, high: int) -> None:
    """Raise unless `value` is an int in [low, high]. bool is refused: JSON `true` must not pass as 1."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{owner}.{name} must be an integer, got {value!r} ({type(value).__name__})")
    if not low <= value <= high:
        raise ValueError(f"{owner}.{name} must be in [{low}, {high}], got {value}")


def _check_real(owner: str, name: str, value: Any, low: float, high: float) -> None:
    """Raise unless `value` is a finite int or float in the open interval (low, high); bool and strings refused."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{owner}.{name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or not low < value < high:
        raise ValueError(f"{owner}.{name} must be a finite number in ({low:g}, {high:g}), got {value!r}")


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


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

    def __post_init__(self) -> None:
        # A signature read from a checkpoint decides whether the checkpoint may load: wrong types must be an error
        # here, not a silent pass in `mismatch` (NaN probe values compare as "close" to anything).
        if not isinstance(self.name, str):
            raise ValueError(f"LLMSignature.name must be a string, got {self.name!r}")
        _check_int("LLMSignature", "hidden_size", self.hidden_size, 0, _MAX_HIDDEN)
        _check_int("LLMSignature", "vocab_size", self.vocab_size, 0, 1 << 31)
        if not isinstance(self.embedding_probe, list):
            raise ValueError(f"LLMSignature.embedding_probe must be a list of numbers, got {self.embedding_probe!r}")
        for value in self.embedding_probe:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"LLMSignature.embedding_probe holds {value!r}: only finite numbers")

    @property
    def is_blank(self) -> bool:
        """True when the signature records nothing of the embedding table (no valid hash, no probe), so that it
        cannot tell the LLM it was made for from any other LLM of the same shape."""
        return not _is_sha256(self.embedding_sha256) and not self.embedding_probe

    def describe(self) -> str:
        return f"{self.name or '?'} (hidden {self.hidden_size}, vocab {self.vocab_size})"

    def mismatch(self, other: LLMSignature, rtol: float = 2e-2, atol: float = 2e-3) -> str | None:
        """Return why `other` is not the LLM this signature describes, or None when it is."""
        if self.hidden_size != other.hidden_size:
            return f"hidden size {other.hidden_size} != {self.hidden_size}"
        if self.vocab_size != other.vocab_size:
            return f"vocabulary size {other.vocab_size} != {self.vocab_size}"
        if _is_sha256(self.embedding_sha256) and self.embedding_sha256 == other.embedding_sha256:
            return None
        # Hashes can differ for the same model loaded in fp16 (bf16 values that fp16 cannot hold): the probe,
        # compared with a tolerance, decides.
        if self.embedding_probe and other.embedding_probe:
            if len(self.embedding_probe) != len(other.embedding_probe):
                return "embedding probes of different lengths"
            pairs = zip(self.embedding_probe, other.embedding_probe, strict=True)
            bad = sum(not abs(a - b) <= atol + rtol * abs(a) for a, b in pairs)  # `not <=`: NaN counts as bad
            # A few values may round differently between dtypes; a different model differs almost everywhere.
            if bad > len(self.embedding_probe) // 10:
                return f"input-embedding table differs ({bad}/{len(self.embedding_probe)} probe values)"
            return None
        # No probe to compare and no equal hash: nothing shows that this is the LLM. Passing here would let a
        # blanked (or hand-edited) signature load against every LLM of the same width and vocabulary.
        if self.is_blank:
            return "the recorded signature has no embedding hash or probe, so no LLM can be shown to match it"
        if not other.embedding_probe:
            return "the given LLM's signature has no embedding probe to compare"
        return "input-embedding table differs (sha256 of the table)"


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
        owner = "ICFormerConfig"
        if isinstance(self.llm, dict):
            self.llm = from_known_fields(LLMSignature, self.llm)
        if not isinstance(self.llm, LLMSignature):
            raise ValueError(f"{owner}.llm must be an LLMSignature (or its dict), got {type(self.llm).__name__}")
        # Types first, then ranges: every check below may then compare and divide without a TypeError from inside.
        _check_int(owner, "hidden_size", self.hidden_size, 1, _MAX_HIDDEN)
        _check_int(owner, "num_blocks", self.num_blocks, 1, _MAX_BLOCKS)
        _check_int(owner, "num_heads", self.num_heads, 1, self.hidden_size)
        _check_int(owner, "intermediate_size", self.intermediate_size, 1, _MAX_INTERMEDIATE)
        _check_int(owner, "window_tokens", self.window_tokens, 1, _MAX_WINDOW)
        _check_int(owner, "num_digest_tokens", self.num_digest_tokens, 1, self.window_tokens)
        _check_real(owner, "rope_theta", self.rope_theta, 0.0, math.inf)
        _check_real(owner, "rms_norm_eps", self.rms_norm_eps, 0.0, 1.0)
        _check_int(owner, "num_special_tokens", self.num_special_tokens, 3, _MAX_SPECIAL)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError("the head dimension must be even for RoPE")
        if self.window_tokens % self.num_digest_tokens:
            raise ValueError(
                f"window_tokens {self.window_tokens} must be a multiple of num_digest_tokens "
                f"{self.num_digest_tokens} (the compression ratio is an integer)"
            )
        if (
            not isinstance(self.local_heads, int)
            or isinstance(self.local_heads, bool)  # `true` would silently mean one local head
            or not 0 <= self.local_heads <= self.num_heads
        ):
            raise ValueError(f"local_heads must be in [0, num_heads={self.num_heads}], got {self.local_heads!r}")
        _check_int(owner, "context_layers", self.context_layers, 0, _MAX_BLOCKS)
        if not isinstance(self.encoder, str) or self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        _check_int(owner, "encoder_rank", self.encoder_rank, 1, _MAX_RANK)
        _check_int(owner, "encoder_alpha", self.encoder_alpha, 1, _MAX_ALPHA)
        if not isinstance(self.digest_positions, str) or self.digest_positions not in DIGEST_POSITIONS:
            raise ValueError(f"digest_positions must be one of {DIGEST_POSITIONS}, got {self.digest_positions!r}")
        if self.llm.hidden_size and self.llm.hidden_size != self.hidden_size:
            raise ValueError(
                f"{owner}.hidden_size {self.hidden_size} differs from its LLM's hidden size {self.llm.hidden_size}"
            )
        # Each size may be sane on its own and the product still absurd (hidden 65536 x MLP 262144 x 128 blocks).
        params = self.estimated_parameters()
        if params > _MAX_PARAMETERS:
            raise ValueError(
                f"this config describes a compressor of about {params:.3g} parameters (more than "
                f"{_MAX_PARAMETERS:.3g}): check hidden_size, intermediate_size, num_blocks and context_layers"
            )

    def estimated_parameters(self) -> int:
        """About how many parameters the compressor holds (exact for the IC-Former; an LLM encoder's LoRA
        adapter is left out, its size depends on the LLM). Computed from the fields, without allocating."""
        c, i = self.hidden_size, self.intermediate_size
        mlp = 3 * c * i
        if self.encoder == "llm":
            return (self.num_digest_tokens + self.num_special_tokens) * c + c * c + c
        block = 4 * c * c + mlp + 3 * c
        layer = 4 * c * c + mlp + 2 * c
        extra = self.num_blocks * self.local_heads
        return (
            (self.num_digest_tokens + self.num_special_tokens) * c
            + self.num_blocks * block
            + self.context_layers * layer
            + c
            + extra
        )

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
        data = without_removed_fields(cls, data, REMOVED_CONFIG_FIELDS)
        return from_known_fields(cls, {"digest_positions": "after", "local_heads": 0, **data})

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
