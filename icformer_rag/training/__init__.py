"""Training the compressor for a frozen LLM: auto-encoding + language-modelling pretraining, then
instruction tuning. See :class:`TrainConfig` and :func:`train`."""

from .config import TrainConfig
from .trainer import Trainer, train

__all__ = ["TrainConfig", "Trainer", "train"]
