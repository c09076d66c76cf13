"""The model options (`--llm`, `--checkpoint`, `--device`, `--dtype`), defined here once for every command that
loads models (`ask`, `compress`, `index`, `info`, `eval`, `data distill`), and :class:`ModelOptions`, the typed
value the commands read them into."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

GROUP_TITLE = "model options"
LLM_HELP = "frozen causal LLM: a local transformers folder (default: the embedded SmolLM2-135M-Instruct)"
CHECKPOINT_HELP = (
    "compressor checkpoint folder (default: the one shipped for the default LLM; until one ships, an UNTRAINED "
    "compressor, with a warning)"
)
CHECKPOINTS_HELP = (
    "compressor checkpoint(s) (default: the shipped one); several are evaluated in one run that generates the "
    "full-text and no-context QA answers once for all of them"
)
DEVICE_HELP = "cpu, cuda, cuda:N or mps (default: cuda when present, else cpu)"
DTYPE_HELP = "float32, bfloat16 or float16 (default: bfloat16 on CUDA, float32 elsewhere)"


@dataclass(frozen=True)
class ModelOptions:
    """Which LLM and compressor to load, and where: None everywhere means the defaults."""

    llm: str | None = None
    checkpoint: str | None = None
    device: str | None = None
    dtype: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ModelOptions:
        """The options :func:`add_model_options` added to a parser, as parsed (a list of checkpoints is not one)."""
        checkpoint = getattr(args, "checkpoint", None)
        if isinstance(checkpoint, list):
            raise TypeError("this command takes several checkpoints: read args.checkpoint itself")
        return cls(llm=args.llm, checkpoint=checkpoint, device=args.device, dtype=args.dtype)


def add_model_options(
    parser: argparse.ArgumentParser, *, checkpoint: Literal["one", "many"] | None = "one"
) -> argparse._ArgumentGroup:
    """Add the model options to `parser`, in a group of their own: `--llm`, `--device`, `--dtype`, and
    `--checkpoint` with one folder (`checkpoint="one"`), several (`"many"`: a list, or None) or none (None)."""
    group = parser.add_argument_group(GROUP_TITLE)
    group.add_argument("--llm", metavar="NAME_OR_PATH", help=LLM_HELP)
    if checkpoint == "one":
        group.add_argument("--checkpoint", metavar="PATH", help=CHECKPOINT_HELP)
    elif checkpoint == "many":
        group.add_argument("--checkpoint", nargs="+", metavar="PATH", help=CHECKPOINTS_HELP)
    group.add_argument("--device", help=DEVICE_HELP)
    group.add_argument("--dtype", help=DTYPE_HELP)
    return group
