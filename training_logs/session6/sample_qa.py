"""Ask 16 questions about the project's own sample documents (fictional, written after the training data was
fixed) from digests, with each checkpoint, and from the full text; prints answers and a score.

    PYTHONPATH=. python training_logs/session6/sample_qa.py CKPT_A CKPT_B [--context paragraph|document] [--out FILE]

Context: the paragraph that holds the answer (oracle retrieval of a RAG chunk, the default) or the whole document.

A small out-of-distribution check beside the evalset: the README's demo asks about these documents.
Score: the gold answer appears in the normalized answer (the eval's `answer_in`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from icformer_rag import GenerationSettings, SoftPromptLM
from icformer_rag.compressor import ContextCompressor
from icformer_rag.data.instruct import answer_in
from icformer_rag.llm import load_llm

SAMPLES = Path(__file__).resolve().parents[2] / "icformer_rag" / "samples"
QUESTIONS = [
    ("velmora", "Who founded the town of Velmora?", "Ada Krenn"),
    ("velmora", "In what year was Velmora founded?", "1723"),
    ("velmora", "What did Marit Krenn build across the Sella in 1768?", "bridge"),
    ("velmora", "When did the railway reach Velmora?", "1872"),
    ("velmora", "Who turned the oldest furnace hall into a museum?", "Irena Vos"),
    ("brennic_observatory", "Who founded the Brennic Observatory?", "Lise Haldor"),
    ("brennic_observatory", "On which mountain does the Brennic Observatory stand?", "Tarrow"),
    ("brennic_observatory", "In what year was Comet Haldor-Pike discovered?", "1897"),
    ("brennic_observatory", "Who followed Lise Haldor as director?", "Oskar Lind"),
    ("port_alder", "Who paid for the Kessa Light?", "Hollis Brand"),
    ("port_alder", "Who was the first keeper of the Kessa Light?", "Jonas Pell"),
    ("port_alder", "Who was the first teacher of the island's school?", "Agnes Tull"),
    ("saltmarsh_railway", "Who was the chief engineer of the Saltmarsh Railway?", "Josiah Wren"),
    ("saltmarsh_railway", "How long is the Saltmarsh Railway in kilometres?", "31"),
    ("saltmarsh_railway", "In what year did the Saltmarsh Railway close?", "1961"),
    ("saltmarsh_railway", "Which locomotive was kept in a shed at Dunmere?", "Curlew"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--context", choices=["paragraph", "document"], default="paragraph")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    llm, tok = load_llm(device="cpu", dtype="float32")
    texts = [(SAMPLES / f"{q[0]}.txt").read_text() for q in QUESTIONS]
    if args.context == "paragraph":
        texts = [next(p for p in t.split("\n\n") if q[2] in p) for t, q in zip(texts, QUESTIONS, strict=True)]
    docs = dict.fromkeys(texts)  # unique contexts, in order
    settings = GenerationSettings(max_new_tokens=48)
    prompts = [q[1] for q in QUESTIONS]
    golds = [q[2] for q in QUESTIONS]
    runs = {"full_text": SoftPromptLM(llm, tok).generate_batch(prompts, [[t] for t in texts], settings)}
    for ckpt in args.checkpoints:
        compressor = ContextCompressor.from_pretrained(ckpt, llm, tok, allow_untrained=False)
        digests = dict(zip(docs, compressor.compress(list(docs)), strict=True))
        lm = SoftPromptLM(llm, tok, compressor)
        runs[ckpt] = lm.generate_batch(prompts, [[digests[t]] for t in texts], settings)
    report = {}
    for name, answers in runs.items():
        hits = [answer_in(g, a) for g, a in zip(golds, answers, strict=True)]
        report[name] = {"correct": sum(hits), "n": len(hits), "answers": answers, "hits": hits}
        print(f"== {name}: {sum(hits)}/{len(hits)}")
        for (_doc, q, gold), a, h in zip(QUESTIONS, answers, hits, strict=True):
            print(f"  [{'x' if h else ' '}] {q} ({gold}) -> {a.strip()[:110]!r}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
