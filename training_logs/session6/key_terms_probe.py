"""Do digests plus a short plain-text list of the context's names and numbers answer better than digests alone?

    PYTHONPATH=. python training_logs/session6/key_terms_probe.py [--checkpoint CKPT] [--limit 200] [--out FILE]

Session 6 found that digests keep a name's shape but not its letters (cloze questions, fictional names). This
probe asks the frozen LLM the evalset's QA dev questions with three contexts per question: the digests alone
(what `icformer-rag eval` scores), the digests followed by a "Names and numbers" line extracted from the text
(`_entities` of the data module plus every number), and that line alone (the control: how much of the answer
the list gives by itself). Same LLM, greedy, 48 new tokens, the eval's `answer_in` scoring. CPU, fp32.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from math import comb
from pathlib import Path

from icformer_rag import GenerationSettings, SoftPromptLM
from icformer_rag.compressor import ContextCompressor
from icformer_rag.data.instruct import answer_in
from icformer_rag.eval import load_qa
from icformer_rag.key_terms import names as _entities  # moved from the data module in session 7
from icformer_rag.llm import load_llm

NUMBER = re.compile(r"\b\d[\d,.]*\d\b|\b\d\b")


def key_terms(text: str, max_terms: int = 24) -> str:
    """The context's names (multi-word first, then by frequency) and numbers, in one line."""
    numbers = list(dict.fromkeys(m.group(0).rstrip(".,") for m in NUMBER.finditer(text)))
    terms = (_entities(text)[: max_terms // 2] + numbers)[:max_terms]
    return "Names and numbers in this document: " + "; ".join(terms) + "."


def sign_test(a: list[bool], b: list[bool]) -> tuple[int, int, float]:
    wins = sum(x and not y for x, y in zip(a, b, strict=True))
    losses = sum(y and not x for x, y in zip(a, b, strict=True))
    n = wins + losses
    p = min(1.0, 2 * sum(comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n) if n else 1.0
    return wins, losses, round(p, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", default=None, help="default: the shipped checkpoint")
    parser.add_argument("--qa", default="evalsets/realtext_dev/qa_dev.jsonl")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    llm, tok = load_llm(device="cpu", dtype="float32")
    compressor = ContextCompressor.from_pretrained(args.checkpoint, llm, tok, allow_untrained=False)
    lm = SoftPromptLM(llm, tok, compressor)
    records = load_qa(args.qa, args.limit)
    contexts = [r["context"] for r in records]
    digests = compressor.compress(contexts)
    terms = [key_terms(c) for c in contexts]
    variants = {
        "digests": [[d] for d in digests],
        "digests+terms": [[d, t] for d, t in zip(digests, terms, strict=True)],
        "terms": [[t] for t in terms],
    }
    settings = GenerationSettings(max_new_tokens=48)
    report: dict = {"checkpoint": args.checkpoint or "shipped", "fingerprint": compressor.fingerprint}
    report["positions"] = {
        "full_text_tokens_mean": sum(len(tok(c)["input_ids"]) for c in contexts) / len(contexts),
        "digests_mean": sum(len(d) for d in digests) / len(digests),
        "terms_tokens_mean": sum(len(tok(t)["input_ids"]) for t in terms) / len(terms),
    }
    correct = {}
    for name, ctx in variants.items():
        t0 = time.perf_counter()
        answers = []
        for i in range(0, len(records), args.batch_size):
            q = [r["question"] for r in records[i : i + args.batch_size]]
            answers += lm.generate_batch(q, ctx[i : i + args.batch_size], settings)
        correct[name] = [answer_in(r["answer"], a) for r, a in zip(records, answers, strict=True)]
        kinds = sorted({r.get("kind", "qa") for r in records})
        by_kind = {
            k: round(
                sum(c for c, r in zip(correct[name], records, strict=True) if r.get("kind") == k)
                / sum(r.get("kind") == k for r in records),
                3,
            )
            for k in kinds
        }
        report[name] = {
            "accuracy": sum(correct[name]) / len(records),
            "by_kind": by_kind,
            "seconds": round(time.perf_counter() - t0, 1),
            "samples": [
                {"question": r["question"], "gold": r["answer"], "answer": a}
                for r, a in list(zip(records, answers, strict=True))[:8]
            ],
        }
        print(f"{name:14s} {report[name]['accuracy']:.3f}  {by_kind}  ({report[name]['seconds']} s)", flush=True)
    report["examples"] = len(records)
    report["digests+terms_vs_digests"] = sign_test(correct["digests+terms"], correct["digests"])
    report["digests+terms_vs_terms"] = sign_test(correct["digests+terms"], correct["terms"])
    report["correct"] = correct
    print(json.dumps({k: v for k, v in report.items() if k not in ("correct",) and not isinstance(v, dict)}))
    print(report["positions"])
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
