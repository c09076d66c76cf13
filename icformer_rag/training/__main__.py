"""`python -m icformer_rag.training [--field value ...]`: train a compressor (same as `icformer-rag train`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Sequence

from .config import ARCHITECTURE_FIELDS, ArchitectureConfig, TrainConfig


def _options() -> list[tuple[dataclasses.Field, typing.Any, str]]:
    """(field, type hint, default shown) of every command-line option: TrainConfig's fields, with its nested
    `architecture` flattened into one option per ArchitectureConfig field (--num-blocks, --encoder, ...)."""
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


def main(argv: Sequence[str] | None = None) -> None:
    from .trainer import train

    parser = argparse.ArgumentParser(prog="python -m icformer_rag.training", description=__doc__)
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    print(json.dumps(train(config_from_args(args))))


if __name__ == "__main__":
    main()
