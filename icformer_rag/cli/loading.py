"""Loading the models a command needs (the LLM, the compressor), cached per process, and the checks that refuse a
checkpoint folder before the slow part."""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import CLIError
from .options import ModelOptions

UNTRAINED_WARNING = (
    "WARNING: no trained compressor checkpoint ships with this install yet. The compressor is UNTRAINED: "
    "its digests are noise and answers read from them are meaningless. "
    "Use --full-context for the baseline answer from the full text."
)


@dataclass
class Models:
    llm: Any
    tokenizer: Any
    load_seconds: float
    compressor: Any = None
    trained: bool = False  # False: the untrained fallback (no checkpoint given, none shipped)


# Loaded models by (llm, device, dtype) and compressors by (llm, device, dtype, checkpoint): the CLI runs
# one command per process, but tests and notebooks call main() many times in one.
_LLM_CACHE: dict[tuple[str | None, str | None, str | None], tuple[Any, Any]] = {}
_COMPRESSOR_CACHE: dict[tuple[Any, ...], tuple[Any, bool]] = {}


def clear_cache() -> None:
    """Forget the models that earlier main() calls in this process loaded."""
    _LLM_CACHE.clear()
    _COMPRESSOR_CACHE.clear()


def _quiet_transformers() -> None:
    # Weight-loading progress bars and tokenizer notices drown the answer; errors still show.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_models(options: ModelOptions, need_compressor: bool = True) -> Models:
    """The LLM (and compressor) for `options`, cached per process."""
    from ..compressor import ContextCompressor, default_checkpoint

    if options.checkpoint is not None and not Path(options.checkpoint).expanduser().is_dir():
        raise CLIError(f"no compressor checkpoint folder at {options.checkpoint}")
    if need_compressor:  # a checkpoint whose files cannot load is refused before the LLM loads
        where = Path(options.checkpoint).expanduser() if options.checkpoint is not None else default_checkpoint()
        if where is not None:
            check_checkpoint(where)
    start = time.perf_counter()
    key = (options.llm, options.device, options.dtype)
    llm, tokenizer = cached_llm(options)
    models = Models(llm, tokenizer, load_seconds=0.0)
    if need_compressor:
        checkpoint: str | Path | None = options.checkpoint
        if checkpoint is None and options.llm is not None:
            checkpoint = default_checkpoint()
            if checkpoint is None:
                raise CLIError(
                    f"--llm {options.llm} needs a compressor trained for it: pass --checkpoint PATH (the untrained "
                    "fallback exists only for the default LLM)"
                )
        ckey = (*key, str(checkpoint) if checkpoint else None)
        if ckey not in _COMPRESSOR_CACHE:
            trained = checkpoint is not None or default_checkpoint() is not None
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*UNTRAINED compressor.*")  # ours is louder
                try:
                    compressor = ContextCompressor.from_pretrained(checkpoint, llm, tokenizer)
                except (CLIError, ValueError, TypeError, OSError, ImportError):
                    raise  # the library's own messages name the checkpoint and the fix
                except RuntimeError as err:  # torch's load_state_dict: weights of other shapes than config.json's
                    raise CLIError(_state_dict_error(checkpoint or default_checkpoint(), err)) from err
                except Exception as err:  # safetensors' own error type, for data cut short after a good header
                    failed = checkpoint or default_checkpoint()
                    raise CLIError(f"compressor checkpoint {failed} does not load: {err}") from err
            _COMPRESSOR_CACHE[ckey] = (compressor, trained)
        models.compressor, models.trained = _COMPRESSOR_CACHE[ckey]
        if not models.trained:
            print(UNTRAINED_WARNING, file=sys.stderr)
    models.load_seconds = time.perf_counter() - start
    print(
        f"LLM {getattr(llm, 'name_or_path', options.llm)} on {llm.device} ({dtype_name(llm.dtype)}), "
        f"loaded in {models.load_seconds:.1f} s",
        file=sys.stderr,
    )
    return models


def cached_llm(options: ModelOptions) -> tuple[Any, Any]:
    """The LLM and tokenizer for `options`, loaded once per process."""
    from ..llm import load_llm

    _quiet_transformers()
    key = (options.llm, options.device, options.dtype)
    if key not in _LLM_CACHE:
        _LLM_CACHE[key] = load_llm(options.llm, device=options.device, dtype=options.dtype)
    return _LLM_CACHE[key]


def dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def check_checkpoint(path: Path) -> None:
    """Refuse a checkpoint folder whose config.json or weights file cannot be read (CLIError), cheaply: the
    config is parsed and the weights' header read, nothing allocated."""
    from ..config import CONFIG_NAME, WEIGHTS_NAME, ICFormerConfig

    try:
        ICFormerConfig.load(path)
    except FileNotFoundError as err:
        raise CLIError(f"compressor checkpoint {path} has no {CONFIG_NAME}") from err
    except (ValueError, TypeError) as err:  # JSON syntax (a ValueError), unknown or mistyped fields
        raise CLIError(f"compressor checkpoint {path}: {CONFIG_NAME} is not valid: {err}") from err
    read_weights_header(path / WEIGHTS_NAME)


def read_weights_header(weights: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Tensor shapes and metadata of a safetensors weights file; CLIError for a missing file, a pickle
    (``torch.save``) file or anything else that is not safetensors."""
    from safetensors import safe_open

    if not weights.is_file():
        raise CLIError(f"no {weights.name} in {weights.parent}")
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
            return shapes, f.metadata() or {}
    except Exception as err:  # safetensors raises its own error type (not an OSError) for a foreign file
        with weights.open("rb") as handle:
            head = handle.read(4)
        if head.startswith(b"PK") or head.startswith(b"\x80"):  # torch.save's zip, or a bare pickle
            raise CLIError(
                f"{weights} is a pickle (torch.save) file, not safetensors: icformer-rag loads weights only from "
                "safetensors (pickle can run code); save them with safetensors.torch.save_file"
            ) from err
        raise CLIError(f"{weights} is not a safetensors file: {' '.join(str(err).split())}") from err


def _state_dict_error(checkpoint: Any, err: RuntimeError) -> str:
    """torch's many-line load_state_dict error as one line: the first problem and how many more."""
    lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
    if not lines:
        return f"compressor checkpoint {checkpoint} does not load: {' '.join(str(err).split())}"
    first = lines[0].replace("torch.Size([", "(").replace("])", ")").rstrip(".")
    more = f"; and {len(lines) - 1} more" if len(lines) > 1 else ""
    return f"compressor checkpoint {checkpoint}: its weights do not fit its config.json ({first}{more})"


def llm_report(models: Models) -> dict[str, Any]:
    llm = models.llm
    return {
        "name": str(getattr(llm, "name_or_path", "")),
        "device": str(llm.device),
        "dtype": dtype_name(llm.dtype),
        "load_seconds": round(models.load_seconds, 3),
    }


def compressor_report(models: Models) -> dict[str, Any] | None:
    if models.compressor is None:
        return None
    return {"fingerprint": models.compressor.fingerprint, "trained": models.trained}
