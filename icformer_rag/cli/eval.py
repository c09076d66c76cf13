"""`icformer-rag eval`: its options, read into an :class:`icformer_rag.eval_run.EvalConfig` for
:func:`icformer_rag.eval_run.run_eval`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .common import EXIT_OK, SubParsers, add_command
from .options import add_model_options

if TYPE_CHECKING:
    from ..counterfactual import CounterfactualSettings
    from ..eval_run import EvalConfig


def register_eval(subparsers: SubParsers) -> None:
    p = add_command(
        subparsers,
        "eval",
        run_eval,
        models=False,
        help="evaluate a compressor: auto-encoding BLEU-4 / token accuracy / fact recall and QA accuracy vs the full "
        "text; --counterfactual DIR: QA about invented facts against the full text, no context and equal-budget peers",
    )
    add_eval_arguments(p)


def run_eval(args: argparse.Namespace) -> int:
    from ..eval_run import run_eval as evaluate

    evaluate(eval_config(args))
    return EXIT_OK


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser, checkpoint="many")
    parser.add_argument("--data-dir", default=None, help="corpus dir: auto-encoding eval on its held-out split")
    parser.add_argument(
        "--ae-windows", type=int, default=64, help="held-out windows per length (leave out --data-dir for QA only)"
    )
    parser.add_argument(
        "--ae-lengths", type=int, nargs="+", default=None, help="window lengths (default 512; 128 512 with --cf-ae)"
    )
    parser.add_argument("--qa", default=None, help="QA dev JSONL (context, question, answer)")
    parser.add_argument("--qa-limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--untrained", action="store_true", help="evaluate a freshly initialised compressor")
    parser.add_argument(
        "--key-terms",
        action="store_true",
        help="QA also from digests + each context's names-and-numbers line, and from the line alone",
    )
    parser.add_argument("--out", default=None, help="write the JSON report here")
    add_counterfactual_arguments(parser)


def add_counterfactual_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--counterfactual` options (see :mod:`icformer_rag.counterfactual`)."""
    from ..counterfactual import ALL_MODES, DEFAULT_MODES

    g = parser.add_argument_group("counterfactual set (issue 14)")
    g.add_argument(
        "--counterfactual",
        default=None,
        metavar="DIR",
        help="folder with passages.jsonl, questions.jsonl, multidoc.jsonl: QA about invented facts in every mode",
    )
    g.add_argument("--cf-limit", type=int, default=None, help="first N questions only")
    g.add_argument(
        "--cf-multidoc",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the 4-passage variant (default: on)",
    )
    g.add_argument(
        "--cf-modes",
        nargs="+",
        default=list(DEFAULT_MODES),
        choices=ALL_MODES,
        metavar="MODE",
        help=f"modes to run, of {' '.join(ALL_MODES)} (default: {' '.join(DEFAULT_MODES)})",
    )
    g.add_argument(
        "--cf-oracle-steps",
        type=int,
        default=0,
        help="adds the oracle mode: digests optimised N Adam steps per passage for auto-encoding (e.g. 400)",
    )
    g.add_argument("--cf-max-new-tokens", type=int, default=32)
    g.add_argument(
        "--text-adapter",
        default=None,
        metavar="DIR",
        help="peft LoRA adapter trained to answer from text: adds the full_tuned mode (full text read through it)",
    )
    g.add_argument(
        "--cf-ae",
        action="store_true",
        help="AE BLEU-4 + fact recall on 128- and 512-token windows of the counterfactual passages",
    )
    from ..quantize import CODECS

    g.add_argument(
        "--cf-digest-codecs",
        nargs="+",
        default=[],
        choices=CODECS,
        metavar="CODEC",
        help=f"issue 17: re-run the digests mode with the digests through each storage codec's round trip (of "
        f"{' '.join(CODECS)}), rows digests@CODEC with sign tests against the raw digests and digests@bf16 "
        "(and AE per codec with --cf-ae); the digests are compressed once",
    )


def counterfactual_settings(args: argparse.Namespace) -> CounterfactualSettings:
    """The :class:`~icformer_rag.counterfactual.CounterfactualSettings` that the `--cf-*` options ask for."""
    from ..counterfactual import CounterfactualSettings

    modes = list(args.cf_modes or CounterfactualSettings().modes)
    steps = args.cf_oracle_steps or 0
    if steps > 0 and "oracle" not in modes:
        modes.append("oracle")
    if "oracle" in modes and steps < 1:
        raise ValueError("the oracle mode needs --cf-oracle-steps N (e.g. 400)")
    if args.text_adapter and "full_tuned" not in modes:
        modes.append("full_tuned")
    return CounterfactualSettings(
        modes=tuple(modes),
        limit=args.cf_limit,
        multidoc=args.cf_multidoc,
        max_new_tokens=args.cf_max_new_tokens,
        batch_size=args.batch_size,
        oracle_steps=max(1, steps),
        ae=args.cf_ae,
        ae_lengths=tuple(args.ae_lengths or (128, 512)),
        ae_windows=args.ae_windows,
        digest_codecs=tuple(args.cf_digest_codecs or ()),
    )


def eval_config(args: argparse.Namespace) -> EvalConfig:
    """The :class:`~icformer_rag.eval_run.EvalConfig` of `icformer-rag eval`'s options."""
    from ..eval_run import EvalConfig

    return EvalConfig(
        checkpoints=tuple(args.checkpoint or [None]),
        llm=args.llm,
        device=args.device,
        dtype=args.dtype,
        data_dir=args.data_dir,
        ae_windows=args.ae_windows,
        ae_lengths=tuple(args.ae_lengths or (512,)),
        qa=args.qa,
        qa_limit=args.qa_limit,
        batch_size=args.batch_size,
        untrained=args.untrained,
        key_terms=args.key_terms,
        out=args.out,
        counterfactual=args.counterfactual,
        counterfactual_settings=counterfactual_settings(args) if args.counterfactual else None,
        text_adapter=args.text_adapter,
    )
