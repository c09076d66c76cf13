"""`icformer-rag bench`: runs the repository's benchmark runner, benchmarks/run_all.py, by path.

benchmarks/ is a folder of the repository, not a package that installs with icformer-rag: the command finds it
next to the source tree this package runs from (a clone, or an editable install), else in the current folder (a
clone whose wheel is installed), and says so when there is none.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from .common import EXIT_OK, CLIError, SubParsers, add_command

RUNNER = Path("benchmarks") / "run_all.py"


def register_bench(subparsers: SubParsers) -> None:
    p = add_command(
        subparsers,
        "bench",
        run_bench,
        models=False,
        help="run the benchmarks (compression speed, RAG latency, indexing) and print their tables",
        description="Runs benchmarks/run_all.py from a clone: --suite cpu|gpu|smoke, --only, --out, --tokenizer.",
    )
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments of `python -m benchmarks.run_all`")


def find_repository() -> Path | None:
    """The clone whose benchmarks/run_all.py `bench` runs: the one holding this source tree, else the current
    folder; None for neither (an installed wheel, run outside a clone)."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / RUNNER).is_file():
            return root
    return None


def run_bench(args: argparse.Namespace) -> int:
    root = find_repository()
    if root is None:
        raise CLIError(
            f"`icformer-rag bench` runs {RUNNER.as_posix()} from a clone of the repository (benchmarks/ is not "
            "installed with the package): run it in the clone, after pip install -e '.[bench]' there"
        )
    # The runner imports its siblings as `benchmarks.*`: the clone goes on the path after what is installed, so
    # that an installed icformer_rag is still the one benchmarked.
    if str(root) not in sys.path:
        sys.path.append(str(root))
    runner = runpy.run_path(str(root / RUNNER), run_name="benchmarks.run_all")
    try:
        runner["main"](list(args.bench_args))
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return EXIT_OK
