"""End-to-end RAG latency (issue 5, item 3): time to first token and total time for one question over k
retrieved documents of ~512 tokens, three ways, through icformer_rag's own SoftPromptLM and ContextCompressor:

- full: the documents' text in the prompt (the baseline);
- query: digests computed at query time (compression is part of the latency);
- precomputed: digests computed at indexing time (loaded, not computed, when the question comes).

Time to first token (TTFT) = [compression] + building the prompt embeddings (chat template, tokenization,
splicing) + the LLM's forward over the prompt with the KV cache, producing the first token; measured end to
end with a host clock (the device synchronized at both ends), with each stage also timed. The prefill forward
alone is timed again with CUDA events on a GPU. Total time = [compression] + prompt + `generate` of
--new-tokens tokens (forced: min_new_tokens = max_new_tokens, so an early end-of-turn cannot flatter a side).

    python -m benchmarks.rag_latency --model smollm2 --docs 8          # the CPU target (real default LLM)
    python -m benchmarks.rag_latency --model llama2-7b --tokenizer .bench/tokenizer   # GPU: 7B shape
"""

from __future__ import annotations

import random
import statistics
import sys
from typing import Any

import torch

from benchmarks import common

CPU_DOCS = (8,)
GPU_DOCS = (4, 8, 16, 32)
MODES = ("full", "query", "precomputed")
# --key-terms: precomputed digests, each followed by its document's names-and-numbers line (extracted at query
# time, as the adapters do with key_terms=True).
TERMS_MODE = "precomputed+terms"

_WORDS = (
    "river harbour council railway engineer archive village merchant bridge observatory lighthouse "
    "winter harvest festival charter glass copper mill canal ferry telescope market school library "
    "garden tower station museum quarry orchard guild mayor founder survey storm flood treaty"
).split()
_NAMES = (
    "Ada Krenn",
    "Tomas Veil",
    "Mira Solberg",
    "Jonah Pike",
    "Elsa Marrow",
    "Ivo Hart",
    "Lena Quist",
    "Otto Brand",
    "Nadia Fenn",
    "Pavel Oran",
)
_PLACES = ("Velmora", "Port Alder", "Saltmarsh", "Brennic", "Harrowgate", "Lindqvist", "Oskarsby", "Tarn Hollow")


def make_documents(tokenizer: Any, num_docs: int, doc_tokens: int, seed: int = 0) -> list[str]:
    """Deterministic synthetic encyclopedia-like documents of exactly `doc_tokens` tokens each (as tokenized
    alone; inside a prompt the count can shift by a token at the edges)."""
    rng = random.Random(seed)
    docs = []
    for d in range(num_docs):
        place = _PLACES[d % len(_PLACES)] + ("" if d < len(_PLACES) else f" {d}")
        sentences = []
        while True:
            sentences.append(
                f"In {rng.randint(1600, 2020)}, {rng.choice(_NAMES)} built the {rng.choice(_WORDS)} of {place} "
                f"near the old {rng.choice(_WORDS)}, and {rng.randint(2, 900)} people came to see the "
                f"{rng.choice(_WORDS)} and the {rng.choice(_WORDS)}."
            )
            ids = tokenizer(" ".join(sentences), add_special_tokens=False)["input_ids"]
            if len(ids) >= doc_tokens:
                break
        docs.append(tokenizer.decode(ids[:doc_tokens]))
    return docs


def load_models(args: Any, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any, Any, str]:
    """(llm, tokenizer, compressor, weights) for --model."""
    from icformer_rag import ContextCompressor, ICFormer
    from icformer_rag.llm import load_llm, load_tokenizer

    if args.model == "smollm2":
        llm, tokenizer = load_llm(args.llm_path, device=device, dtype=dtype)
        compressor = ContextCompressor.from_pretrained(args.checkpoint, llm, tokenizer)
        return llm, tokenizer, compressor, "real (default LLM and its shipped compressor checkpoint)"
    tokenizer = load_tokenizer(args.tokenizer)
    shape = common.SHAPES["smollm2" if args.model == "smollm2-random" else args.model]
    # The 7B shape reads the SmolLM2 tokenizer's ids: its vocabulary is that tokenizer's (49,152 rather than
    # Llama-2's 32,000), which changes only the embedding table and the last position's logits.
    shape = common.LLMShape(**{**shape.__dict__, "vocab_size": len(tokenizer)})
    llm = common.build_llm(shape, device, dtype, max_positions=args.max_positions)
    llm.generation_config.eos_token_id = tokenizer.eos_token_id
    llm.generation_config.pad_token_id = tokenizer.pad_token_id
    config = common.icformer_config_for(llm.config, tiny=args.model == "tiny")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = ICFormer(config)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    compressor = ContextCompressor(
        model,
        llm.get_input_embeddings(),
        tokenizer,
        fingerprint="benchmark-random",
        max_batch_tokens=args.max_batch_tokens,
    )
    return llm, tokenizer, compressor, "random (shape only)"


def contexts_for(mode: str, docs: list[str], digests: list[Any] | None) -> list[Any]:
    """What the LLM reads in `mode`: the texts, the digests, or each digest followed by its key-terms line."""
    if mode == "full":
        return docs
    if mode == TERMS_MODE:
        from icformer_rag.key_terms import with_key_terms

        return with_key_terms(digests or [], docs)
    return list(digests or [])


class Pipeline:
    """One question over documents, one of the three ways, with each stage timed."""

    def __init__(self, lm: Any, compressor: Any, device: torch.device, new_tokens: int) -> None:
        self.lm, self.compressor, self.device, self.new_tokens = lm, compressor, device, new_tokens

    def prompt(
        self, mode: str, question: str, docs: list[str], digests: list[Any] | None, stages: dict[str, float]
    ) -> torch.Tensor:
        if mode == "query":
            with common.Stopwatch(self.device) as sw:
                digests = self.compressor.compress(docs)
            stages["compress_s"] = sw.seconds
        with common.Stopwatch(self.device) as sw:
            embeds = self.lm.build_inputs(question, contexts_for(mode, docs, digests))
        stages["prompt_s"] = sw.seconds
        return embeds

    def prefill(self, embeds: torch.Tensor) -> torch.Tensor:
        out = self.lm.llm(inputs_embeds=embeds[None], use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].argmax(-1)  # the first token

    @torch.inference_mode()
    def ttft(self, mode: str, question: str, docs: list[str], digests: list[Any] | None) -> dict[str, float]:
        stages: dict[str, float] = {}
        with common.Stopwatch(self.device) as total:
            embeds = self.prompt(mode, question, docs, digests, stages)
            with common.Stopwatch(self.device) as sw:
                self.prefill(embeds)
            stages["prefill_s"] = sw.seconds
        stages["ttft_s"] = total.seconds
        stages["prompt_positions"] = embeds.shape[0]
        return stages

    @torch.inference_mode()
    def total(self, mode: str, question: str, docs: list[str], digests: list[Any] | None) -> dict[str, float]:
        stages: dict[str, float] = {}
        with common.Stopwatch(self.device) as total:
            embeds = self.prompt(mode, question, docs, digests, stages)
            mask = torch.ones(1, embeds.shape[0], dtype=torch.long, device=self.device)
            with common.Stopwatch(self.device) as sw:
                out = self.lm.llm.generate(
                    inputs_embeds=embeds[None],
                    attention_mask=mask,
                    do_sample=False,
                    max_new_tokens=self.new_tokens,
                    min_new_tokens=self.new_tokens,
                    eos_token_id=self.lm.eos_token_ids,
                    pad_token_id=self.lm.pad_token_id,
                )
            stages["generate_s"] = sw.seconds
        stages["total_s"] = total.seconds
        stages["new_tokens"] = int(out.shape[1])
        return stages


def _median_stages(samples: list[dict[str, float]]) -> dict[str, Any]:
    keys = samples[0].keys()
    return {k: statistics.median(s[k] for s in samples) for k in keys}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="smollm2",
        choices=("smollm2", "smollm2-random", "llama2-7b", "tiny"),
        help="smollm2: the real default LLM; the others: random weights of that shape",
    )
    parser.add_argument("--llm-path", default=None, help="with --model smollm2: a local LLM folder (default: embedded)")
    parser.add_argument("--checkpoint", default=None, help="with --model smollm2: compressor (default: shipped)")
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer folder for random-weight models (default: the "
        "default LLM's; `python -m benchmarks.stage_tokenizer DIR` writes one to carry to a GPU)",
    )
    parser.add_argument(
        "--docs",
        type=int,
        nargs="*",
        default=None,
        help=f"documents per question (default CPU {CPU_DOCS}, GPU {GPU_DOCS})",
    )
    parser.add_argument("--doc-tokens", type=int, default=512, help="tokens per document")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens generated for the total time")
    parser.add_argument("--total-repeats", type=int, default=None, help="repeats of the total (generate) timing")
    parser.add_argument("--max-positions", type=int, default=32768, help="positions of random-weight models")
    parser.add_argument("--max-batch-tokens", type=int, default=64 * 512, help="compressor batch budget")
    parser.add_argument(
        "--compile", action="store_true", help="compress through ContextCompressor.compile() (compiled in warm-up)"
    )
    parser.add_argument(
        "--key-terms", action="store_true", help=f"also time {TERMS_MODE!r}: digests + each document's key-terms line"
    )
    args = parser.parse_args(argv)
    all_modes = MODES + ((TERMS_MODE,) if args.key_terms else ())
    common.apply_threads(args)

    device, dtype = common.resolve(args.device, args.dtype)
    gpu = device.type == "cuda"
    if args.model == "llama2-7b" and not gpu:
        print(
            "rag_latency: the 7B shape runs on a GPU only (a 7B model in fp32 on this CPU would take minutes "
            "per prefill); skipped",
            file=sys.stderr,
        )
        return {"skipped": "7B shape needs a GPU"}
    args.docs = args.docs if args.docs is not None else list(GPU_DOCS if gpu else CPU_DOCS)
    args.repeats = args.repeats or (10 if gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (2 if gpu else 1)
    args.new_tokens = args.new_tokens or (32 if gpu else 16)
    args.total_repeats = args.total_repeats or (5 if gpu else 2)

    from icformer_rag import SoftPromptLM

    llm, tokenizer, compressor, weights = load_models(args, device, dtype)
    if args.compile:
        compressor.compile()
    lm = SoftPromptLM(llm, tokenizer, compressor)
    pipe = Pipeline(lm, compressor, device, args.new_tokens)
    max_pos = lm.max_positions
    questions = [
        "Who built the observatory, and in what year?",
        "How many people came to see the canal?",
        "What did the founder build near the old mill?",
    ]
    print(f"model {args.model} ({weights}), {device}, {str(dtype).removeprefix('torch.')}", file=sys.stderr)

    rows: list[dict[str, Any]] = []
    for k in args.docs:
        # Input sets rotate: each repeat gets another question and another set of documents.
        sets = [make_documents(tokenizer, k, args.doc_tokens, seed=100 * k + s) for s in range(len(questions))]
        with common.Stopwatch(device) as index_sw:
            digest_sets = [compressor.compress(docs) for docs in sets]
        # The three modes run side by side: each repeat times one question of every mode in turn, so a load
        # that changes during the run (a shared machine) reaches them alike.
        modes = []
        for mode in all_modes:
            positions = lm.build_inputs(questions[0], contexts_for(mode, sets[0], digest_sets[0])).shape[0]
            if max_pos and positions + args.new_tokens > max_pos:
                rows.append(
                    {
                        "docs": k,
                        "mode": mode,
                        "prompt_positions": positions,
                        "skipped": f"prompt of {positions} positions exceeds the LLM's {max_pos}",
                    }
                )
                print(f"  {k:2d} docs {mode:11s}: skipped ({positions} positions > {max_pos})", file=sys.stderr)
                continue
            modes.append(mode)
        if not modes:
            continue
        run = [
            (questions[i % len(questions)], sets[i % len(sets)], digest_sets[i % len(sets)])
            for i in range(args.warmup + args.repeats)
        ]
        ttft: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        for i, x in enumerate(run):
            for mode in modes:
                sample = pipe.ttft(mode, *x)
                if i >= args.warmup:
                    ttft[mode].append(sample)
        embeds_sets = {
            m: [lm.build_inputs(q, contexts_for(m, d, g)) for q, d, g in run[: len(questions)]] for m in modes
        }
        prefill_dev = dict(
            zip(
                modes,
                common.time_interleaved(
                    [(pipe.prefill, embeds_sets[m]) for m in modes], device, warmup=1, repeats=args.repeats
                ),
                strict=True,
            )
        )
        totals: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        for i in range(1 + args.total_repeats):  # the first round warms generate up
            for mode in modes:
                sample = pipe.total(mode, *run[i % len(run)])
                if i:
                    totals[mode].append(sample)
        for mode in modes:
            med = _median_stages(ttft[mode])
            tot = _median_stages(totals[mode])
            decode_s = max(tot["generate_s"] - med["prefill_s"], 0.0)
            row = {
                "docs": k,
                "mode": mode,
                "doc_tokens": args.doc_tokens,
                "prompt_positions": int(med["prompt_positions"]),
                "ttft_s": med["ttft_s"],
                "ttft": common.summarize([s["ttft_s"] for s in ttft[mode]]),
                "stages_median_s": {k2: v for k2, v in med.items() if k2.endswith("_s")},
                "prefill_forward": prefill_dev[mode],
                "total_s": tot["total_s"],
                "total": common.summarize([s["total_s"] for s in totals[mode]]),
                "generate_s": tot["generate_s"],
                "new_tokens": args.new_tokens,
                "decode_tokens_per_s": (args.new_tokens - 1) / decode_s if decode_s else None,
                "raw_ttft_samples": ttft[mode],
                "raw_total_samples": totals[mode],
            }
            if mode != "full":
                row["indexing_s_all_sets"] = index_sw.seconds
            rows.append(row)
            print(
                f"  {k:2d} docs {mode:11s}: TTFT {row['ttft_s']:.3f} s (spread {row['ttft']['spread']:.2f}), "
                f"total {row['total_s']:.3f} s, {row['prompt_positions']} positions",
                file=sys.stderr,
                flush=True,
            )

    table_rows = []
    ratios = []
    for k in args.docs:
        by = {r["mode"]: r for r in rows if r["docs"] == k and "ttft_s" in r}
        for mode in all_modes:
            r = by.get(mode)
            skipped = next((x for x in rows if x["docs"] == k and x["mode"] == mode and "skipped" in x), None)
            entry = {"docs": k, "mode": mode}
            if r:
                entry.update(
                    {
                        "positions": r["prompt_positions"],
                        "TTFT s": r["ttft_s"],
                        "TTFT spread": r["ttft"]["spread"],
                        "compress s": r["stages_median_s"].get("compress_s"),
                        "prefill s": r["stages_median_s"]["prefill_s"],
                        "total s": r["total_s"],
                    }
                )
                if "full" in by and mode != "full":
                    entry["full/this TTFT"] = by["full"]["ttft_s"] / r["ttft_s"]
                    entry["full/this total"] = by["full"]["total_s"] / r["total_s"]
            elif skipped:
                entry.update({"positions": skipped["prompt_positions"], "TTFT s": "exceeds context"})
            table_rows.append(entry)
        if "full" in by:
            ratios.append(
                {
                    "docs": k,
                    **{
                        f"ttft_ratio_full_over_{m}": by["full"]["ttft_s"] / by[m]["ttft_s"]
                        for m in all_modes[1:]
                        if m in by
                    },
                    **{
                        f"total_ratio_full_over_{m}": by["full"]["total_s"] / by[m]["total_s"]
                        for m in all_modes[1:]
                        if m in by
                    },
                }
            )

    checks = []
    goals = {("smollm2", "cpu", 8): (5.0, 4.0), ("llama2-7b", "cuda", 16): (4.0, 3.7)}
    for rat in ratios:
        goal = goals.get((args.model, device.type, rat["docs"]))
        if goal:
            for m, g in zip(("precomputed", "query"), goal, strict=True):
                v = rat.get(f"ttft_ratio_full_over_{m}")
                checks.append(
                    {
                        "target": f"{rat['docs']} docs, TTFT full / {m}",
                        "goal": f">= {g}x",
                        "measured": v,
                        "met": None if v is None else v >= g,
                    }
                )
    table = (
        f"RAG latency, {args.model} ({weights}), {device}, {str(dtype).removeprefix('torch.')}, "
        f"{args.doc_tokens}-token documents, {args.new_tokens} new tokens\n"
    )
    table += common.format_table(
        table_rows,
        [
            "docs",
            "mode",
            "positions",
            "TTFT s",
            "TTFT spread",
            "compress s",
            "prefill s",
            "total s",
            "full/this TTFT",
            "full/this total",
        ],
    )
    if checks:
        table += "\n\n" + common.format_table(
            [{**c, "met": {True: "yes", False: "NO", None: "?"}[c["met"]]} for c in checks],
            ["target", "goal", "measured", "met"],
        )

    out = common.output_dir(args, device)
    plots = []
    if not args.no_plot:
        series = {}
        for mode in all_modes:
            pts = sorted((r["docs"], r["ttft_s"]) for r in rows if r["mode"] == mode and "ttft_s" in r)
            series[mode] = ([p[0] for p in pts], [p[1] for p in pts])
        p = common.plot(
            out / f"rag_latency_{args.model}{args.tag}.png",
            series,
            title=f"time to first token, {args.model} ({device.type}, {str(dtype).removeprefix('torch.')})",
            xlabel="documents of ~512 tokens",
            ylabel="TTFT (s)",
        )
        if p:
            plots.append(str(p))
    payload = {
        "model": args.model,
        "weights": weights,
        "dtype": str(dtype).removeprefix("torch."),
        "llm_parameters": sum(p.numel() for p in llm.parameters()),
        "icformer_config": {k: v for k, v in compressor.config.to_dict().items() if k != "llm"},
        "args": vars(args),
        "questions": questions,
        "rows": rows,
        "ratios": ratios,
        "targets": checks,
        "plots": plots,
    }
    return common.finish(f"rag_latency_{args.model}", args, device, payload, table)


if __name__ == "__main__":
    main()
