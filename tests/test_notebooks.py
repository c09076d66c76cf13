"""The tutorials in notebooks/ run top to bottom through a real Jupyter kernel (nbclient + ipykernel, the
`notebooks` extra), with the default LLM on the CPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from run_notebooks import NOTEBOOKS, run  # noqa: E402


def _text(notebook) -> str:
    out = []
    for cell in notebook.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                pytest.fail(f"{o['ename']}: {o['evalue']}")
            out.append(o.get("text", "") or str(o.get("data", {}).get("text/plain", "")))
    return "".join(out)


def test_the_notebooks_are_the_tutorials_we_ship():
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb", "02_langchain_rag.ipynb", "03_llamaindex_rag.ipynb"]


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("nbclient", "nbformat", "ipykernel")),
    reason="the `notebooks` extra is not installed",
)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path):
    text = _text(run(path))
    # each tutorial prints what it claims to show
    expected = {
        "01_quickstart": ["digest vectors", "digests + key terms", "same vectors: True"],
        "02_langchain_rag": ["digests in", "icformer_cache_hit': True", "digests + key terms:"],
        "03_llamaindex_rag": ["each with a digest in the store", "digests from the store: [True, True, True]"],
    }[path.stem]
    for snippet in expected:
        assert snippet in text, (snippet, text[-2000:])
