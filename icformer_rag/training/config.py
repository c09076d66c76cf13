"""Training configuration."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import from_known_fields


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
    num_blocks: int = field(default=3, metadata={"help": "Blocks of a new compressor."})
    num_digest_tokens: int = field(default=128, metadata={"help": "Digests per window of a new compressor."})
    window_tokens: int = field(default=512, metadata={"help": "Window length of a new compressor."})
    digest_positions: str = field(
        default="spread", metadata={"help": "Digest RoPE layout of a new compressor: 'spread' or 'after'."}
    )
    local_heads: int = field(default=0, metadata={"help": "Distance-decaying heads per block of a new compressor."})
    chunk_queries: bool = field(
        default=False, metadata={"help": "New compressor: digest queries start from a projection of their tokens."}
    )
    context_layers: int = field(
        default=0,
        metadata={
            "help": "Self-attention layers over each window's tokens before the digests read them (contextual keys "
            "and values). With init_from, a checkpoint with fewer gets them added (zero-initialised: it starts "
            "unchanged)."
        },
    )
    encoder: str = field(
        default="icformer",
        metadata={
            "help": "Encoder of a new compressor: 'icformer' (cross-attention over word embeddings) or 'llm' (the "
            "ICAE-style encoder: the LLM with a LoRA adapter of rank encoder_rank and k memory tokens; its adapter "
            "trains at reader_lr)."
        },
    )
    encoder_rank: int = field(default=16, metadata={"help": "LoRA rank of a new 'llm' encoder."})
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
    readout_fraction: float = field(
        default=1.0,
        metadata={
            "help": "Share of each batch's windows the readout loss scores (0-1]. Its 49k-way scoring of every slot "
            "costs ~15% of a step on an H100 at 1.0; once its accuracy saturates (~0.999), 0.25 keeps the signal."
        },
    )
    ae_input_dropout: float = field(
        default=0.0,
        metadata={
            "help": "Auto-encoding steps: share of the teacher-forced window tokens the LLM reads as a blank (a "
            "zero vector; the targets stay the true tokens), so that more predictions must come from the digests "
            "(word dropout). The logged AE loss is then over the blanked inputs. 0 = off."
        },
    )
    ae_self_feed: float = field(
        default=0.0,
        metadata={
            "help": "Auto-encoding steps: share of the teacher-forced window tokens replaced by the LLM's own greedy "
            "prediction of them (from the digests and the true prefix, one extra forward without gradients; the "
            "targets stay the true tokens), so the digests learn to pull a reconstruction back after a slip "
            "(parallel scheduled sampling). 0 = off."
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
        if any(n < 1 or n > self.window_tokens for n in self.window_lengths):
            raise ValueError(f"window_lengths must lie in [1, window_tokens={self.window_tokens}]")
        for name in ("batch_size", "grad_accum", "max_steps", "lm_tokens", "log_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.batch_size % self.grad_accum:
            raise ValueError("batch_size must be a multiple of grad_accum")
        if self.readout_weight < 0:
            raise ValueError("readout_weight must be >= 0")
        if not 0 < self.readout_fraction <= 1:
            raise ValueError("readout_fraction must be in (0, 1]")
        if not 0 <= self.ae_input_dropout < 1:
            raise ValueError("ae_input_dropout must be in [0, 1)")
        if not 0 <= self.ae_self_feed <= 1:
            raise ValueError("ae_self_feed must be in [0, 1]")
        if self.kl_weight < 0:
            raise ValueError("kl_weight must be >= 0")
        if self.encoder not in ("icformer", "llm") or self.encoder_rank < 1:
            raise ValueError(f"encoder must be 'icformer' or 'llm' and encoder_rank >= 1, got {self.encoder!r}")
        if self.encoder == "llm" and self.fsdp:
            raise ValueError("an 'llm' encoder with fsdp is not supported")
        if self.context_layers < 0 or self.reader_rank < 0 or self.reader_alpha <= 0 or self.reader_lr <= 0:
            raise ValueError("context_layers and reader_rank must be >= 0, reader_alpha and reader_lr > 0")
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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return from_known_fields(cls, data)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
