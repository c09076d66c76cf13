"""Training configuration."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import ENCODERS, ICFormerConfig, from_known_fields, without_removed_fields

# TrainConfig options removed after their A/B, with the value that meant "off" (train_info.json and --config files
# written while they existed hold them): chunk_queries (A/B "chunk", AE loss 2.917 against spread's 2.751: not
# pursued), ae_input_dropout (session 4: not for run 7), ae_self_feed (session 5: not for run 8).
REMOVED_TRAIN_FIELDS: dict[str, Any] = {"chunk_queries": False, "ae_input_dropout": 0.0, "ae_self_feed": 0.0}

_ICFORMER_FIELDS = {f.name: f for f in fields(ICFormerConfig)}


def _chosen(name: str, note: str = "") -> Any:
    """A field of ArchitectureConfig: ICFormerConfig's field `name`, with its help, unset (None) by default."""
    source = _ICFORMER_FIELDS[name]
    return field(default=None, metadata={"help": source.metadata["help"] + note, "icformer_default": source.default})


@dataclass
class ArchitectureConfig:
    """The compressor's shape as a run chooses it: the :class:`~icformer_rag.config.ICFormerConfig` fields that are
    not taken from the LLM (width, heads, MLP size and RoPE base are). None = not chosen: a new compressor gets
    ICFormerConfig's default, a run with `init_from` the checkpoint's value. A chosen value that differs from the
    checkpoint's is refused (:meth:`check_fits`), except more context layers, which extend it, and a multiple of its
    digests per window, which widens it (each digest query copied). Once a run has built
    its compressor, the trainer records its actual architecture here (train_config.json, train_info.json)."""

    num_blocks: int | None = _chosen("num_blocks")
    num_digest_tokens: int | None = _chosen("num_digest_tokens")
    window_tokens: int | None = _chosen("window_tokens")
    digest_positions: str | None = _chosen("digest_positions")
    local_heads: int | None = _chosen("local_heads")
    context_layers: int | None = _chosen(
        "context_layers", " With init_from, a checkpoint with fewer gets them added (it starts unchanged)."
    )
    encoder: str | None = _chosen("encoder", " An 'llm' encoder's adapter trains at reader_lr.")
    encoder_rank: int | None = _chosen("encoder_rank", " Its alpha is twice the rank.")

    def __post_init__(self) -> None:
        # Full checks (ranges against the LLM's width and heads) run when ICFormerConfig is built; these catch what
        # can be told without the LLM.
        for f in fields(self):
            value = getattr(self, f.name)
            want = str if isinstance(f.metadata["icformer_default"], str) else int
            if value is not None and (type(value) is not want):
                raise ValueError(f"{f.name} must be {want.__name__}, got {value!r}")
        if self.encoder is not None and self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.encoder_rank is not None and self.encoder_rank < 1:
            raise ValueError(f"encoder_rank must be >= 1, got {self.encoder_rank}")
        if self.context_layers is not None and self.context_layers < 0:
            raise ValueError(f"context_layers must be >= 0, got {self.context_layers}")

    def chosen(self) -> dict[str, Any]:
        """The fields that were set, as ICFormerConfig overrides."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def resolved(self, name: str) -> Any:
        """The value a new compressor gets for field `name`: the chosen one, else ICFormerConfig's default."""
        value = getattr(self, name)
        return _ICFORMER_FIELDS[name].default if value is None else value

    @classmethod
    def of(cls, config: ICFormerConfig) -> ArchitectureConfig:
        """The architecture of a built compressor."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    def check_fits(self, config: ICFormerConfig, source: str, extend_context: bool = True) -> None:
        """Raise ValueError naming every chosen field (as its command-line flag) whose value differs from the
        checkpoint's `config` (`source` says which checkpoint). More context layers extend a checkpoint, unless
        `extend_context` is False (a resume: the architecture must be the one saved)."""
        problems = []
        for name, value in self.chosen().items():
            have = getattr(config, name)
            if name == "context_layers" and extend_context and value > have:
                continue
            if name == "num_digest_tokens" and extend_context and value > have and value % have == 0:
                continue  # widened: each digest query copied (ContextCompressor.from_pretrained)
            if value != have:
                problems.append(f"--{name.replace('_', '-')} {value} (the checkpoint has {have})")
        if problems:
            raise ValueError(
                f"{source}: {'; '.join(problems)}. Architecture flags shape a new compressor; with a checkpoint, "
                "leave them out (the checkpoint's are used) or give the checkpoint's values"
            )


ARCHITECTURE_FIELDS = tuple(f.name for f in fields(ArchitectureConfig))


@dataclass
class TrainConfig:
    """One training run. The objective of each step is drawn with the probabilities below (the rest is
    language modelling), so one config covers pretraining (AE + LM) and instruction tuning."""

    data_dir: str = field(default=".data/corpus", metadata={"help": "Corpus built by `icformer_rag.data build`."})
    out_dir: str = field(default="runs/compressor", metadata={"help": "Checkpoints and metrics go here."})
    llm: str | None = field(default=None, metadata={"help": "LLM name or path; None = embedded default."})
    init_from: str | None = field(
        default=None, metadata={"help": "Compressor checkpoint to start from (fresh optimizer); None = new."}
    )
    resume: bool = field(default=True, metadata={"help": "Continue from out_dir/resume when it exists."})
    continue_step: bool = field(
        default=True, metadata={"help": "With init_from, continue its step count (and LR schedule) where it ended."}
    )
    architecture: ArchitectureConfig = field(
        default_factory=ArchitectureConfig,
        metadata={"help": "The compressor's shape (ArchitectureConfig); one command-line flag per field."},
    )
    reader_rank: int = field(
        default=0,
        metadata={
            "help": "Train a reader adapter (LoRA of this rank on every linear layer of the LLM, used only when "
            "digests are in the prompt; saved as reader_adapter/ beside the release). With init_from holding one, "
            "it is continued whatever the rank here. 0 = no adapter (the LLM stays exactly as it is)."
        },
    )
    reader_alpha: int = field(default=32, metadata={"help": "LoRA alpha of a new reader adapter."})
    reader_from: str | None = field(
        default=None,
        metadata={
            "help": "Start the reader adapter from this peft adapter folder (e.g. a checkpoint's reader_adapter/), "
            "for a compressor that does not come with one (a new --encoder llm next to a trained reader)."
        },
    )
    reader_lr: float = field(
        default=2e-4, metadata={"help": "Peak learning rate of the reader adapter (warm-up as the compressor's)."}
    )
    instruct_context: str = field(
        default="digests",
        metadata={
            "help": "What instruction steps put in the prompt: 'digests' (the compressor's) or 'text' (the contexts' "
            "full text: trains the full-text reader baseline, the adapter only; needs instruct_fraction 1)."
        },
    )
    batch_size: int = field(default=64, metadata={"help": "Global batch (windows or examples) per optimizer step."})
    grad_accum: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    lr: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    min_lr: float = field(default=1e-4, metadata={"help": "Learning rate at the end of the cosine decay."})
    warmup_steps: int = field(default=100, metadata={"help": "Linear warm-up steps."})
    max_steps: int = field(default=20000, metadata={"help": "Length of the schedule (cosine ends here)."})
    stop_at_step: int | None = field(default=None, metadata={"help": "Stop early at this step (schedule kept)."})
    max_minutes: float | None = field(default=None, metadata={"help": "Stop and checkpoint after this long."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (matrices only)."})
    grad_clip: float = field(default=1.0, metadata={"help": "Max gradient norm (0 = off)."})
    ae_fraction: float = field(default=0.5, metadata={"help": "Share of auto-encoding steps."})
    instruct_fraction: float = field(default=0.0, metadata={"help": "Share of instruction steps."})
    instruct_file: str | None = field(default=None, metadata={"help": "JSONL of context/prompt/answer records."})
    readout_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the auxiliary readout loss on auto-encoding and LM steps: a linear head must recover "
            "each digest's own tokens from it, scored against the LLM's embedding table (no LLM run; the head "
            "is training-only and saved as readout.safetensors beside the release). 0 = off."
        },
    )
    kl_weight: float = field(
        default=0.0,
        metadata={
            "help": "Instruction steps: add this weight times KL(teacher || student) on the answer tokens, the "
            "teacher being the same frozen LLM with the context's full text in the prompt instead of digests "
            "(one more LLM forward per step, without gradients; the logged loss stays the cross-entropy, the KL "
            "is logged as 'kl'). 0 = off."
        },
    )
    kl_teacher: str | None = field(
        default=None,
        metadata={
            "help": "A peft LoRA adapter folder (e.g. baselines/full-text-reader-smollm2, the tuned full-text reader) "
            "through which the KL teacher reads the full text, instead of the frozen LLM. Needs kl_weight > 0; "
            "the adapter stays frozen and is never saved with the compressor."
        },
    )
    readout_fraction: float = field(
        default=1.0,
        metadata={
            "help": "Share of each batch's windows the readout loss scores (0-1]. Its 49k-way scoring of every slot "
            "costs ~15% of a step on an H100 at 1.0; once its accuracy saturates (~0.999), 0.25 keeps the signal."
        },
    )
    ae_invent: float = field(
        default=0.0,
        metadata={
            "help": "Share [0, 1) of each auto-encoding window's tokens overwritten by invented names made of the "
            "tokenizer's own word pieces, each recurring in its window (icformer_rag/training/invented.py): tokens "
            "the LLM cannot guess from the prefix, so the digests must carry them exactly. 0 = off."
        },
    )
    lm_tokens: int = field(default=128, metadata={"help": "Continuation tokens predicted in LM steps."})
    window_lengths: tuple[int, ...] = field(
        default=(512, 384, 256, 128), metadata={"help": "Window lengths a step draws from (one per batch)."}
    )
    window_weights: tuple[float, ...] = field(
        default=(0.55, 0.15, 0.15, 0.15), metadata={"help": "Probabilities of window_lengths."}
    )
    seed: int = field(default=0, metadata={"help": "Seeds init and the data order (a function of step)."})
    dtype: str = field(default="bf16", metadata={"help": "LLM dtype on CUDA (CPU runs use fp32)."})
    device: str | None = field(default=None, metadata={"help": "Device; None = CUDA when present."})
    compile: bool = field(default=False, metadata={"help": "torch.compile the compressor."})
    compile_llm: bool = field(
        default=False,
        metadata={
            "help": "torch.compile each decoder block of the frozen LLM (regional compilation; the LLM's forward "
            "and backward are ~90% of a step). Same losses as eager up to rounding."
        },
    )
    fsdp: bool = field(
        default=False,
        metadata={
            "help": "Under torchrun (world > 1): shard the frozen LLM (decoder layers, final norm, untied LM head) "
            "across ranks with FSDP2, for LLMs that do not fit one GPU; the input embeddings stay replicated "
            "and the compressor stays under DDP. Ignored in a single process."
        },
    )
    log_every: int = field(default=10, metadata={"help": "Steps between metric lines."})
    save_every: int = field(default=500, metadata={"help": "Steps between resume checkpoints."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})

    def __post_init__(self) -> None:
        if isinstance(self.architecture, dict):
            self.architecture = from_known_fields(ArchitectureConfig, self.architecture)
        if not isinstance(self.architecture, ArchitectureConfig):
            raise ValueError(f"architecture must be an ArchitectureConfig, got {type(self.architecture).__name__}")
        arch = self.architecture
        self.window_lengths = tuple(self.window_lengths)
        self.window_weights = tuple(self.window_weights)
        if not 0 <= self.ae_fraction <= 1 or not 0 <= self.instruct_fraction <= 1:
            raise ValueError("ae_fraction and instruct_fraction must be in [0, 1]")
        if self.ae_fraction + self.instruct_fraction > 1 + 1e-9:
            raise ValueError("ae_fraction + instruct_fraction must not exceed 1")
        if self.instruct_fraction > 0 and not self.instruct_file:
            raise ValueError("instruct_fraction > 0 needs an instruct_file")
        if len(self.window_lengths) != len(self.window_weights) or not self.window_lengths:
            raise ValueError("window_lengths and window_weights must have the same, non-zero length")
        # With init_from and no window_tokens given, the checkpoint's window decides (the trainer checks it then).
        window = arch.resolved("window_tokens") if arch.window_tokens is not None or not self.init_from else None
        if window is not None and any(n < 1 or n > window for n in self.window_lengths):
            raise ValueError(f"window_lengths must lie in [1, window_tokens={window}]")
        for name in ("batch_size", "grad_accum", "max_steps", "lm_tokens", "log_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.batch_size % self.grad_accum:
            raise ValueError("batch_size must be a multiple of grad_accum")
        if self.readout_weight < 0:
            raise ValueError("readout_weight must be >= 0")
        if not 0 < self.readout_fraction <= 1:
            raise ValueError("readout_fraction must be in (0, 1]")
        if self.kl_weight < 0:
            raise ValueError("kl_weight must be >= 0")
        if self.kl_teacher and (self.kl_weight <= 0 or self.instruct_context != "digests"):
            raise ValueError("kl_teacher needs kl_weight > 0 and instruct_context 'digests' (it is the KL's teacher)")
        if not 0 <= self.ae_invent < 1:
            raise ValueError("ae_invent must be in [0, 1)")
        if arch.encoder == "llm" and self.fsdp:
            raise ValueError("an 'llm' encoder with fsdp is not supported")
        if self.reader_rank < 0 or self.reader_alpha <= 0 or self.reader_lr <= 0:
            raise ValueError("reader_rank must be >= 0, reader_alpha and reader_lr > 0")
        if self.instruct_context not in ("digests", "text"):
            raise ValueError(f"instruct_context must be 'digests' or 'text', got {self.instruct_context!r}")
        if self.instruct_context == "text" and (self.instruct_fraction != 1 or self.reader_rank < 1):
            raise ValueError(
                "instruct_context 'text' trains a full-text reader: needs instruct_fraction 1 and reader_rank"
            )
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError("need 0 <= min_lr <= lr and lr > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def nest(data: dict[str, Any]) -> dict[str, Any]:
        """`data` in today's layout: without removed options (at their off value; see REMOVED_TRAIN_FIELDS) and
        with architecture fields given at the top level (how TrainConfig held them before, e.g. in an older
        train_info.json) moved into `architecture`. Nothing else is checked."""
        if not isinstance(data, dict):
            return data
        data = without_removed_fields(TrainConfig, data, REMOVED_TRAIN_FIELDS)
        flat = {k: data[k] for k in ARCHITECTURE_FIELDS if k in data}
        if not flat:
            return data
        nested = data.get("architecture") or {}
        if not isinstance(nested, dict):
            raise ValueError(f"architecture must be a JSON object, got {nested!r}")
        twice = sorted(set(flat) & set(nested))
        if twice:
            raise ValueError(f"{twice} given both at the top level and in 'architecture'")
        rest = {k: v for k, v in data.items() if k not in flat}
        return {**rest, "architecture": {**nested, **flat}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return from_known_fields(cls, cls.nest(data))

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
