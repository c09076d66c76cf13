"""The committed counterfactual evaluation set keeps its contract (fast, CPU, no LLM)."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "evalsets" / "counterfactual" / "data"
KINDS = {"who", "what", "when", "where", "how_many", "which", "cloze"}


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def data() -> tuple[dict[str, dict], list[dict], list[dict]]:
    passages = _rows("passages.jsonl")
    assert len({p["id"] for p in passages}) == len(passages)
    return {p["id"]: p for p in passages}, _rows("questions.jsonl"), _rows("multidoc.jsonl")


def test_passages_contract(data) -> None:
    passages, _, _ = data
    assert len(passages) >= 120
    for part in ("substituted", "generated"):
        sel = [p for p in passages.values() if p["part"] == part]
        assert len(sel) >= 50
        assert sum(p["num_tokens"] > 512 for p in sel) >= len(sel) / 3
    assert len({p["genre"] for p in passages.values() if p["part"] == "generated"}) >= 8
    for p in passages.values():
        assert set(p) == {"id", "part", "genre", "source", "text", "num_tokens"}
        assert 80 <= p["num_tokens"] <= 1500


def test_questions_contract(data) -> None:
    passages, questions, _ = data
    assert len(questions) >= 360
    assert len({q["id"] for q in questions}) == len(questions)
    assert all(sum(q["part"] == part for q in questions) >= 150 for part in ("substituted", "generated"))
    assert sum(q["kind"] == "cloze" for q in questions) <= len(questions) / 4
    for q in questions:
        p = passages[q["passage_id"]]
        assert q["kind"] in KINDS and q["part"] == p["part"] and q["genre"] == p["genre"]
        assert q["answers"] and all(a and a in p["text"] for a in q["answers"]), q["id"]
        assert not any(a.lower() in q["question"].lower() for a in q["answers"]), q["id"]


def test_multidoc_contract(data) -> None:
    passages, questions, multidoc = data
    by_id = {q["id"]: q for q in questions}
    assert len(multidoc) >= 150
    assert len({m["id"] for m in multidoc}) == len(multidoc)
    assert len(set(Counter(m["gold"] for m in multidoc))) == 4  # the gold position varies
    for m in multidoc:
        q = by_id[m["question_id"]]
        ids = m["passage_ids"]
        assert len(ids) == 4 == len(set(ids)) and ids[m["gold"]] == q["passage_id"]
        assert sum(passages[i]["num_tokens"] for i in ids) <= 2000
        for i, pid in enumerate(ids):
            if i != m["gold"]:
                assert not any(a.lower() in passages[pid]["text"].lower() for a in q["answers"])


def test_manifest_matches_files(data) -> None:
    passages, questions, multidoc = data
    manifest = json.loads((DATA / "manifest.json").read_text(encoding="utf-8"))
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest
    assert manifest["counts"]["passages"] == len(passages)
    assert manifest["counts"]["questions"] == len(questions)
    assert manifest["counts"]["multidoc"] == len(multidoc)
    assert all(re.fullmatch(r"[0-9a-f]{64}", s["sha256"]) for s in manifest["sources"])


def test_generated_part_is_deterministic() -> None:
    from evalsets.counterfactual.build import build_generated
    from evalsets.counterfactual.names import NameBank, repo_blocklist

    def count(text: str) -> int:  # a whitespace count keeps the test free of the tokenizer
        return len(text.split())

    def once() -> tuple[list[dict], list[dict]]:
        bank = NameBank(repo_blocklist(ROOT), lambda s: 2 if len(s) > 5 else 1)
        return build_generated(3, 12, bank, count)

    first, second = once(), once()
    assert first == second
    assert len(first[1]) >= 12
    p = {x["id"]: x for x in first[0]}
    assert all(a in p[q["passage_id"]]["text"] for q in first[1] for a in q["answers"])
    rng_words = random.Random(0)  # a different seed gives different passages
    assert rng_words is not None and build_generated(4, 2, NameBank((), lambda s: 2), count)[0] != first[0][:2]


def test_no_overlap_with_training_code_and_samples(data) -> None:
    passages, questions, _ = data
    files = sorted([*(ROOT / "icformer_rag/data").glob("*.py"), *(ROOT / "icformer_rag/samples").glob("*")])
    texts = [path.read_text(encoding="utf-8", errors="ignore").lower() for path in files if path.is_file()]
    for q in questions:
        for a in q["answers"]:
            if re.search(r"[A-Za-z]{4,}", a):  # invented names; plain numbers occur everywhere
                assert not any(re.search(rf"\b{re.escape(a.lower())}\b", t) for t in texts), (q["id"], a)
