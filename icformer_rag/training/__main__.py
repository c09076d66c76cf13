"""`python -m icformer_rag.training [--field value ...]`: train a compressor (same as `icformer-rag train`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Sequence

from .config import TrainConfig


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--option` per TrainConfig field, with the field's help text and default."""
    hints = typing.get_type_hints(TrainConfig)
    parser.add_argument("--config", help="JSON file of TrainConfig fields (command-line options override it)")
    for f in dataclasses.fields(TrainConfig):
        name = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        # argparse %-formats help strings: a literal "15% of" would read as a "% o" conversion and break --help.
        help_text = f"{f.metadata.get('help', '')} (default: {default})".replace("%", "%%")
        if hint is bool:
            parser.add_argument(name, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(hint) is tuple:
            inner = typing.get_args(hint)[0]
            parser.add_argument(name, dest=f.name, type=inner, nargs="+", default=None, help=help_text)
        else:
            base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
            parser.add_argument(name, dest=f.name, type=base, default=None, help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = json.loads(open(args.config).read()) if getattr(args, "config", None) else {}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
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
