"""Run the benchmark suite and print every table last.

    python -m benchmarks.run_all                 # CPU: the issue's CPU targets (real default LLM), small sizes
    python -m benchmarks.run_all --suite gpu     # GPU: both shapes, all sizes, CUDA graphs, 7B RAG latency
    python -m benchmarks.run_all --suite smoke   # tiny shapes, seconds (what the tests run)

`--only compression,compile,rag,indexing` picks parts (on a GPU each of `compression`, `compile` and
`rag,indexing` fits one 10-minute device call); `--out DIR` puts every JSON and PNG there.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from benchmarks import compression, indexing, rag_latency

# torch.compile + CUDA graphs for the two window encoders, at one window and at 64 (no length points): the
# issue's lever for the launch-bound small cases.
COMPILE_ARGS = [
    *("--sizes", "--batches", "1", "64", "--methods", "icformer,icae"),
    *("--cuda-graph", "--compile", "--keep-going", "--tag", "_compile"),
]


def suites(out: list[str], tokenizer: list[str]) -> dict[str, list[tuple[str, Callable[..., Any], list[str]]]]:
    smoke_common = ["--threads", "1", "--repeats", "1", "--warmup", "0", *out]
    return {
        "smoke": [
            (
                "compression",
                compression.main,
                ["--shape", "tiny", "--sizes", "32", "64", "--batches", "1", "2", *smoke_common],
            ),
            (
                "rag",
                rag_latency.main,
                [
                    "--model",
                    "tiny",
                    "--docs",
                    "2",
                    "--doc-tokens",
                    "64",
                    "--new-tokens",
                    "2",
                    "--total-repeats",
                    "1",
                    *tokenizer,
                    *smoke_common,
                ],
            ),
            (
                "indexing",
                indexing.main,
                [
                    "--shape",
                    "tiny",
                    "--num-docs",
                    "12",
                    "--min-tokens",
                    "20",
                    "--max-tokens",
                    "70",
                    "--budgets",
                    "64",
                    "128",
                    "--chunk-docs",
                    "6",
                    "--no-progress",
                    *tokenizer,
                    *smoke_common,
                ],
            ),
        ],
        "cpu": [
            (
                "compression",
                compression.main,
                ["--shape", "smollm2", "--sizes", "512", "2048", "--batches", "1", "8", *out],
            ),
            ("rag", rag_latency.main, ["--model", "smollm2", "--docs", "4", "8", *out]),
            ("indexing", indexing.main, ["--shape", "smollm2", "--num-docs", "200", *out]),
        ],
        "gpu": [
            ("compression", compression.main, ["--shape", "smollm2", "--cuda-graph", "--keep-going", *out]),
            ("compression", compression.main, ["--shape", "llama2-7b", "--cuda-graph", "--keep-going", *out]),
            # compiling every point would take minutes per shape: COMPILE_ARGS picks one window and 64
            *(
                ("compile", compression.main, [*COMPILE_ARGS, "--shape", shape, *out])
                for shape in ("smollm2", "llama2-7b")
            ),
            ("rag", rag_latency.main, ["--model", "llama2-7b", *tokenizer, *out]),
            # the library's compiled compressor (ContextCompressor.compile) at query time
            (
                "rag",
                rag_latency.main,
                ["--model", "llama2-7b", "--docs", "16", "32", "--compile", "--tag", "_compile", *tokenizer, *out],
            ),
            ("rag", rag_latency.main, ["--model", "smollm2-random", *tokenizer, *out]),
            ("indexing", indexing.main, ["--shape", "smollm2", "--no-progress", *tokenizer, *out]),
            ("indexing", indexing.main, ["--shape", "llama2-7b", "--num-docs", "2000", "--no-progress", *out]),
        ],
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--suite", choices=("cpu", "gpu", "smoke"), default=None, help="default: gpu when CUDA is available, else cpu"
    )
    parser.add_argument(
        "--only",
        default="compression,compile,rag,indexing",
        help="comma-separated parts to run (compile: the GPU suite's torch.compile compression runs)",
    )
    parser.add_argument("--out", default=None, help="folder for every JSON and PNG")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder for random-weight LLMs")
    args = parser.parse_args(argv)
    if args.suite is None:
        import torch

        args.suite = "gpu" if torch.cuda.is_available() else "cpu"
    out = ["--out", args.out] if args.out else []
    tok = ["--tokenizer", args.tokenizer] if args.tokenizer else []
    parts = {p.strip() for p in args.only.split(",")}
    results, tables, failures = [], [], []
    for part, fn, fn_args in suites(out, tok)[args.suite]:
        if part not in parts:
            continue
        print(f"\n=== {part}: {' '.join(fn_args)}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            payload = fn(fn_args)
        except Exception:  # one failed part must not lose the others' results
            traceback.print_exc()
            failures.append(f"{part} {' '.join(fn_args)}")
            continue
        results.append(payload)
        print(f"=== {part} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        if "table" in payload:
            tables.append(payload["table"])
        elif "skipped" in payload:
            tables.append(f"{part}: skipped ({payload['skipped']})")
    print("\n\n" + "\n\n".join(tables))
    if failures:
        print("\nFAILED: " + "; ".join(failures))
        raise SystemExit(1)
    return results


if __name__ == "__main__":
    main()
