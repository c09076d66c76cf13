"""The reader adapter: a LoRA adapter on the LLM that is switched on only while the LLM reads digests.

Why: a frozen 135M LLM can be made to *recite* a window from digests, yet not to answer a question from the
same digests (issue 14, section 3: oracle digests reconstruct verbatim and answer 3.3%). A small adapter
trained with the compressor teaches the LLM to read them. The base weights never change: prompts without
digests (the full-text baseline, plain chat) run with the adapter off, so they are exactly the LLM's own.

On disk the adapter is what peft writes for a `PeftModel` (``adapter_config.json`` + ``adapter_model.safetensors``,
keys prefixed ``base_model.model.``), in the folder :data:`ADAPTER_DIR` of a compressor checkpoint, so
``PeftModel.from_pretrained(llm, ckpt / "reader_adapter")`` also loads it. peft is imported lazily: a
checkpoint without an adapter needs no peft.

The adapter is switched per generate call, for the whole model; :func:`adapter_scope` holds a per-LLM lock
meanwhile, so threads that share one LLM (the LangChain and LlamaIndex adapters' workers) never read with
the other's setting.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

READER = "icformer_reader"  # adapter name inside the LLM
TEACHER = "icformer_teacher"  # a full-text reader adapter that training's KL teacher reads through (frozen)
ADAPTER_DIR = "reader_adapter"  # folder of a compressor checkpoint that holds it
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."  # what PeftModel.save_pretrained puts before every key
_LOCK_ATTR = "_icformer_adapter_lock"
_OURS = "icformer_"  # prefix of every adapter this library injects (readers, LLM encoders)


@dataclass
class ReaderConfig:
    """Shape of a new reader adapter (LoRA)."""

    r: int = field(default=16, metadata={"help": "LoRA rank."})
    alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale alpha / r)."})
    dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    target_modules: str | list[str] = field(
        default="all-linear", metadata={"help": "Modules to adapt; 'all-linear' = every linear layer but the LM head."}
    )

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0:
            raise ValueError("reader adapter: r must be >= 1 and alpha > 0")
        if not 0 <= self.dropout < 1:
            raise ValueError("reader adapter: dropout must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _require_peft() -> None:
    if importlib.util.find_spec("peft") is None:
        raise ImportError("the reader adapter needs peft: pip install 'peft>=0.13'")


def has_adapter(llm: Any, name: str = READER) -> bool:
    """Whether `llm` holds an injected adapter called `name`."""
    return any(name in getattr(m, "lora_A", {}) for m in llm.modules())


def add_reader(
    llm: Any, config: ReaderConfig | None = None, name: str = READER, seed: int | None = 0
) -> list[torch.nn.Parameter]:
    """Inject a new, untrained LoRA adapter into `llm` in place (LoRA B starts at zero, so the LLM's outputs are
    unchanged until it trains) and return its parameters, which require grad; the base weights stay frozen."""
    _require_peft()
    from peft import LoraConfig, inject_adapter_in_model

    if has_adapter(llm, name):
        raise ValueError(f"the LLM already holds an adapter named {name!r}")
    cfg = config or ReaderConfig()
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules)
    # peft resolves "all-linear" against the model type and keeps the output layer out. LoRA A is drawn from the
    # global RNG: seed a local one, so that the same run makes the same adapter (exact resume) and the caller's
    # RNG does not move.
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        inject_adapter_in_model(lora, llm, adapter_name=name)
    params = adapter_parameters(llm, name)
    set_enabled(llm, False)  # peft's switch also freezes what it switches off: mark trainable after
    for p in params:
        p.requires_grad_(True)
    return params


def adapter_parameters(llm: Any, name: str = READER) -> list[torch.nn.Parameter]:
    """The trainable tensors of adapter `name`, in a fixed order (module order)."""
    return [p for n, p in llm.named_parameters() if f".{name}." in n and "lora_" in n]


def save_reader(llm: Any, path: str | Path, name: str = READER, dtype: torch.dtype | None = None) -> Path:
    """Write adapter `name` of `llm` to `path` the way peft saves a PeftModel's adapter (in `dtype`, else as is)."""
    _require_peft()
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = _lora_config(llm, name)
    config.base_model_name_or_path = str(getattr(llm, "name_or_path", "") or "")
    config.save_pretrained(str(path))
    state = get_peft_model_state_dict(llm, adapter_name=name)
    save_file(
        {_PREFIX + k: v.detach().to(dtype or v.dtype).cpu().contiguous() for k, v in state.items()},
        str(path / ADAPTER_WEIGHTS),
        metadata={"format": "pt"},
    )
    return path


def load_reader(
    llm: Any, path: str | Path, name: str = READER, into_existing: bool = False, dtype: torch.dtype | None = None
) -> None:
    """Inject the adapter saved in `path` into `llm` in place (frozen, on the LLM's device, in `dtype` or the
    LLM's), off. `into_existing` loads the weights into an adapter `name` already there (a training resume)."""
    _require_peft()
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / ADAPTER_CONFIG).is_file() or not (path / ADAPTER_WEIGHTS).is_file():
        raise FileNotFoundError(f"{path} holds no adapter ({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS})")
    if not has_adapter(llm, name):
        inject_adapter_in_model(LoraConfig.from_pretrained(str(path)), llm, adapter_name=name)
    elif not into_existing:
        raise ValueError(f"the LLM already holds an adapter named {name!r}")
    state = {k.removeprefix(_PREFIX): v for k, v in load_file(str(path / ADAPTER_WEIGHTS)).items()}
    result = set_peft_model_state_dict(llm, state, adapter_name=name)
    missing = [k for k in getattr(result, "missing_keys", []) if f".{name}." in k and "lora_" in k]
    if getattr(result, "unexpected_keys", None) or missing:
        raise ValueError(
            f"{path}: the adapter does not fit this LLM (missing {missing[:3]}, unexpected "
            f"{list(getattr(result, 'unexpected_keys', []))[:3]})"
        )
    weight = llm.get_input_embeddings().weight
    set_enabled(llm, False)
    for p in adapter_parameters(llm, name):
        p.requires_grad_(False)
        p.data = p.data.to(device=weight.device, dtype=dtype or weight.dtype)


def _lora_layers(llm: Any) -> Iterator[Any]:
    # Every generate call asks this: an LLM can only hold adapters once peft was imported, so a plain LLM costs
    # neither the import nor a walk over its modules.
    if "peft" not in sys.modules:
        return iter(())
    from peft.tuners.tuners_utils import BaseTunerLayer

    return (m for m in llm.modules() if isinstance(m, BaseTunerLayer))


def _lora_config(llm: Any, name: str) -> Any:
    config = getattr(llm, "peft_config", {}).get(name)
    if config is None:
        raise ValueError(f"the LLM holds no adapter named {name!r}")
    return config


def set_enabled(llm: Any, enabled: bool, name: str = READER) -> None:
    """Switch adapter `name` on (the only active one) or every adapter off, in every adapted layer."""
    set_active(llm, name if enabled else None)


def set_active(llm: Any, name: str | None) -> None:
    """Make adapter `name` the one every adapted layer applies, or (None) switch all adapters off."""
    for layer in _lora_layers(llm):
        if name is None:
            layer.enable_adapters(False)
        else:
            layer.set_adapter(name)  # peft: the active adapter; set_adapter also marks it trainable
            layer.enable_adapters(True)


def active_adapter(llm: Any) -> str | None:
    """The adapter the LLM's adapted layers apply now, or None (off, or no adapter)."""
    for layer in _lora_layers(llm):
        if layer.disable_adapters:
            return None
        active = layer.active_adapter
        return active if isinstance(active, str) else active[0]
    return None


def is_enabled(llm: Any) -> bool:
    """Whether the LLM's adapted layers currently apply an adapter."""
    return active_adapter(llm) is not None


def _lock(llm: Any) -> threading.RLock:
    # Re-entrant: an LLM encoder (icformer_rag.llm_encoder) switches its own adapter on inside a reader's scope.
    lock = getattr(llm, _LOCK_ATTR, None)
    if lock is None:
        lock = threading.RLock()
        setattr(llm, _LOCK_ATTR, lock)
    return lock


def is_ours(name: str | None) -> bool:
    """Whether an adapter name is this library's (a reader's or an LLM encoder's), not one of the user's own."""
    return name is not None and name.startswith(_OURS)


@contextmanager
def adapter_scope(llm: Any, name: str | None) -> Iterator[None]:
    """Run the block with reader adapter `name` on, or (None) with no reader adapter on, holding the LLM's adapter
    lock, and restore the previous setting after. An LLM without adapters runs as it is, with no lock, and so
    does an LLM whose active adapter is the user's own when no reader is asked for: a PEFT model the user tuned
    for plain text keeps its adapter on full-text prompts."""
    layers = list(_lora_layers(llm))
    if not layers or (name is None and not is_ours(active_adapter(llm))):
        with nullcontext():
            yield
        return
    with _lock(llm):
        before = active_adapter(llm)
        params = [p for n, p in llm.named_parameters() if "lora_" in n]
        trainable = [p.requires_grad for p in params]
        set_active(llm, name)
        try:
            yield
        finally:
            set_active(llm, before)
            for p, t in zip(params, trainable, strict=True):
                p.requires_grad_(t)  # peft's switch marks the active adapter trainable: keep what the caller set
