"""Sanity check with the real default LLM: no context (should be ~0%) and the full passage (answerable).

    python -m evalsets.counterfactual.sanity --data evalsets/counterfactual/data [--full-sample 96]

Greedy, 32 new tokens, batch 16, CPU fp32; score: any gold answer appears in the answer (``answer_in``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Print no-context and full-text accuracy per part; write the no-context hits to stdout as JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path(__file__).parent / "data")
    ap.add_argument("--full-sample", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args(argv)
    from icformer_rag import GenerationSettings, SoftPromptLM, load_compressor
    from icformer_rag.data.instruct import answer_in

    passages = {p["id"]: p for p in map(json.loads, (args.data / "passages.jsonl").open())}
    questions = [json.loads(line) for line in (args.data / "questions.jsonl").open()]
    compressor, llm, tok = load_compressor(device="cpu", dtype="float32")
    lm = SoftPromptLM(llm, tok, compressor)
    settings = GenerationSettings(max_new_tokens=32)

    def run(qs: list[dict], with_text: bool) -> list[bool]:
        hits = []
        for i in range(0, len(qs), args.batch):
            chunk = qs[i : i + args.batch]
            ctx = [[passages[q["passage_id"]]["text"]] if with_text else [] for q in chunk]
            answers = lm.generate_batch([q["question"] for q in chunk], ctx, settings)
            hits += [any(answer_in(g, a) for g in q["answers"]) for q, a in zip(chunk, answers, strict=False)]
            print(f"{'full' if with_text else 'none'}: {i + len(chunk)}/{len(qs)}", file=sys.stderr, flush=True)
        return hits

    report = {}
    none = run(questions, False)
    report["no_context"] = {
        "n": len(none),
        "correct": sum(none),
        "hits": [q["id"] for q, h in zip(questions, none, strict=False) if h],
    }
    sample = random.Random(14).sample(questions, min(args.full_sample, len(questions)))
    full = run(sample, True)
    for part in ("substituted", "generated"):
        sel = [h for q, h in zip(sample, full, strict=False) if q["part"] == part]
        report[f"full_text_{part}"] = {"n": len(sel), "correct": sum(sel)}
        nsel = [h for q, h in zip(questions, none, strict=False) if q["part"] == part]
        report[f"no_context_{part}"] = {"n": len(nsel), "correct": sum(nsel)}
    report["full_text"] = {"n": len(full), "correct": sum(full)}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
