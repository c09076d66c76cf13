"""Run the tutorials in notebooks/ through a Jupyter kernel and save them with their outputs.

    python scripts/run_notebooks.py                      # every notebook, in place
    python scripts/run_notebooks.py notebooks/01_quickstart.ipynb

Each runs from the repository root in a fresh kernel (the interpreter running this script), on the CPU unless
CUDA is present; a cell that raises stops its notebook with the error. The test suite runs them the same way
without saving (tests/test_notebooks.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def run(path: Path, timeout: int = 900) -> object:
    """Execute the notebook at `path` from the repository root; returns the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    return notebook


def main(argv: list[str] | None = None) -> None:
    import nbformat

    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)] or NOTEBOOKS
    for path in paths:
        print(f"running {path.name} ...", flush=True)
        nbformat.write(run(path), path)
    print(f"saved {len(paths)} notebook(s) with their outputs")


if __name__ == "__main__":
    main()
