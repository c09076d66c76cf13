"""`icformer-rag train` (also `python -m icformer_rag.training`): one option per TrainConfig field."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing

from .common import EXIT_OK, SubParsers, add_command

if typing.TYPE_CHECKING:
    from ..training.config import TrainConfig


def register_train(subparsers: SubParsers) -> None:
    p = add_command(
        subparsers,
        "train",
        run_train,
        models=False,
        help="train a compressor for a frozen LLM (AE + LM pretraining, instruction tuning; resumable)",
        description="Train the compressor; every option is a TrainConfig field. Runs under torchrun for DDP.",
    )
    add_train_arguments(p)


def run_train(args: argparse.Namespace) -> int:
    from ..training import train

    print(json.dumps(train(config_from_args(args))))
    return EXIT_OK


def _options() -> list[tuple[dataclasses.Field[typing.Any], typing.Any, str]]:
    """(field, type hint, default shown) of every command-line option: TrainConfig's fields, with its nested
    `architecture` flattened into one option per ArchitectureConfig field (--num-blocks, --encoder, ...)."""
    from ..training.config import ArchitectureConfig, TrainConfig

    out = []
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "architecture":
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append((f, hints[f.name], str(default)))
    arch_hints = typing.get_type_hints(ArchitectureConfig)
    for f in dataclasses.fields(ArchitectureConfig):
        shown = f"{f.metadata['icformer_default']} for a new compressor; with --init-from the checkpoint's, another "
        shown += "value is refused"
        out.append((f, arch_hints[f.name], shown))
    return out


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--option` per TrainConfig field (and ArchitectureConfig field), with the field's help text and default."""
    from ..training.config import ARCHITECTURE_FIELDS

    parser.add_argument("--config", help="JSON file of TrainConfig fields (command-line options override it)")
    group = parser.add_argument_group("architecture", "The compressor's shape (TrainConfig.architecture).")
    for f, hint, default in _options():
        name = "--" + f.name.replace("_", "-")
        add = group.add_argument if f.name in ARCHITECTURE_FIELDS else parser.add_argument
        # argparse %-formats help strings: a literal "15% of" would read as a "% o" conversion and break --help.
        help_text = f"{f.metadata.get('help', '')} (default: {default})".replace("%", "%%")
        if hint is bool:
            add(name, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(hint) is tuple:
            inner = typing.get_args(hint)[0]
            add(name, dest=f.name, type=inner, nargs="+", default=None, help=help_text)
        else:
            base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
            add(name, dest=f.name, type=base, default=None, help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of `--config FILE` (if given) with the options given on the command line over it."""
    from ..training.config import ARCHITECTURE_FIELDS, TrainConfig

    values = json.loads(open(args.config).read()) if getattr(args, "config", None) else {}
    values = TrainConfig.nest(values)
    for f, _, _ in _options():
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if f.name in ARCHITECTURE_FIELDS:
            values["architecture"] = {**(values.get("architecture") or {}), f.name: value}
        else:
            values[f.name] = value
    return TrainConfig.from_dict(values)
