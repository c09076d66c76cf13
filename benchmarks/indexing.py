"""Indexing-time compression throughput (issue 5, item 4): documents per second for compressing a corpus with
`ContextCompressor.compress_ids` (windows of all documents packed into padded batches under
`max_batch_tokens`), with a progress bar, and how it scales with the batch budget.

The corpus is random token ids with document lengths drawn between --min-tokens and --max-tokens (default
384..640: most documents are one full window plus a short one, so padding and short windows are included, as
in a real index). Random weights: speed does not depend on weight values. With --tokenizer (or the default
LLM's tokenizer, when installed) the tokenization rate of matching text is measured too.

    python -m benchmarks.indexing --num-docs 200                     # CPU
    python -m benchmarks.indexing --shape smollm2                    # GPU: 10,000 documents
"""

from __future__ import annotations

import random
import sys
from typing import Any

import torch

from benchmarks import common

CPU_BUDGETS = (8 * 512, 32 * 512)
GPU_BUDGETS = (8 * 512, 32 * 512, 64 * 512, 128 * 512, 256 * 512)


def make_corpus(num_docs: int, vocab: int, min_tokens: int, max_tokens: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(5, vocab - 1) for _ in range(rng.randint(min_tokens, max_tokens))] for _ in range(num_docs)]


def build_compressor(shape: common.LLMShape, device: torch.device, dtype: torch.dtype, budget: int) -> Any:
    """A random-weight compressor with the LLM's embedding table (the LLM itself is not needed to index)."""
    from icformer_rag import ContextCompressor, ICFormer

    config = common.icformer_config_for(shape.llama_config(), tiny=shape.name == "tiny")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ICFormer(config).to(device=device, dtype=dtype).eval().requires_grad_(False)
        embed = torch.nn.Embedding(shape.vocab_size, shape.hidden_size, device=device, dtype=dtype)
    return ContextCompressor(model, embed, None, max_batch_tokens=budget, fingerprint="benchmark-random")


def tokenization_rate(tokenizer_path: str | None, num_docs: int, doc_tokens: int) -> dict[str, Any] | None:
    """Documents per second of the default (or given) tokenizer on ~doc_tokens-token texts, batched."""
    try:
        from benchmarks.rag_latency import make_documents
        from icformer_rag.llm import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_path)
    except Exception as err:  # no tokenizer here (a bare GPU machine): say so in the JSON
        return {"skipped": f"{type(err).__name__}: {str(err)[:200]}"}
    base = make_documents(tokenizer, min(num_docs, 50), doc_tokens)
    texts = [base[i % len(base)] for i in range(num_docs)]
    sw = common.Stopwatch(torch.device("cpu"))
    with sw:
        ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return {
        "docs": num_docs,
        "seconds": sw.seconds,
        "docs_per_s": num_docs / sw.seconds,
        "tokens_per_s": sum(map(len, ids)) / sw.seconds,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="smollm2", choices=sorted(common.SHAPES))
    parser.add_argument("--num-docs", type=int, default=None, help="corpus size (default GPU 10,000, CPU 200)")
    parser.add_argument("--min-tokens", type=int, default=384)
    parser.add_argument("--max-tokens", type=int, default=640)
    parser.add_argument(
        "--budgets",
        type=int,
        nargs="*",
        default=None,
        help=f"max_batch_tokens values (default CPU {CPU_BUDGETS}, GPU {GPU_BUDGETS})",
    )
    parser.add_argument(
        "--chunk-docs",
        type=int,
        default=1000,
        help="documents per compress call, as an indexer adding documents in chunks would",
    )
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder for the tokenization rate")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--compile", action="store_true", help="compress through ContextCompressor.compile() (one untimed pass first)"
    )
    args = parser.parse_args(argv)
    common.apply_threads(args)

    device, dtype = common.resolve(args.device, args.dtype)
    gpu = device.type == "cuda"
    args.num_docs = args.num_docs or (10_000 if gpu else 200)
    args.budgets = args.budgets or list(GPU_BUDGETS if gpu else CPU_BUDGETS)
    args.repeats = args.repeats or (3 if gpu else 1)
    shape = common.SHAPES[args.shape]
    corpus = make_corpus(args.num_docs, shape.vocab_size, args.min_tokens, args.max_tokens)
    tokens = sum(map(len, corpus))
    print(
        f"indexing {args.num_docs} documents ({tokens} tokens), shape {shape.name}, {device}, "
        f"{str(dtype).removeprefix('torch.')}; {common.WEIGHTS_NOTE}",
        file=sys.stderr,
    )

    rows = []
    for budget in args.budgets:
        comp = build_compressor(shape, device, dtype, budget)
        if args.compile:
            comp.compile()
            # every batch size the timed passes will meet compiles here, not inside the timing
            for start in range(0, len(corpus), args.chunk_docs):
                comp.compress_ids(corpus[start : start + args.chunk_docs])
        comp.compress_ids(corpus[: min(len(corpus), 2 * args.chunk_docs, 64)])  # warm-up (kernels, allocator)
        times = []
        for r in range(args.repeats):
            with common.Stopwatch(device) as sw:
                for start in range(0, len(corpus), args.chunk_docs):
                    comp.compress_ids(
                        corpus[start : start + args.chunk_docs], show_progress=not args.no_progress and r == 0
                    )
            times.append(sw.seconds)
        timing = common.summarize(times)
        t = timing["median_s"]
        windows = sum(-(-len(d) // comp.config.window_tokens) for d in corpus)
        memory = common.peak_memory(lambda c=comp: c.compress_ids(corpus[: args.chunk_docs]), device)
        rows.append(
            {
                "max_batch_tokens": budget,
                "windows_per_batch": budget // comp.config.window_tokens,
                "seconds": t,
                "docs_per_s": args.num_docs / t,
                "tokens_per_s": tokens / t,
                "windows_per_s": windows / t,
                "timing": timing,
                "peak_memory_mb": memory["peak_mb"],
                # what compressing a chunk adds to the resident weights; the absolute peak also holds whatever
                # an earlier benchmark in the same process left to the allocator
                "compress_memory_mb": memory.get("peak_above_start_mb", memory["peak_mb"]),
                "memory": memory,
            }
        )
        print(
            f"  max_batch_tokens {budget:>7d}: {args.num_docs / t:10.1f} docs/s ({tokens / t:,.0f} tokens/s)",
            file=sys.stderr,
            flush=True,
        )
        del comp
        if gpu:
            torch.cuda.empty_cache()

    tok = tokenization_rate(args.tokenizer, args.num_docs, (args.min_tokens + args.max_tokens) // 2)
    best = max(rows, key=lambda r: r["docs_per_s"])
    table = (
        f"indexing throughput, {args.num_docs} documents of {args.min_tokens}-{args.max_tokens} tokens, shape "
        f"{shape.name}, {device}, {str(dtype).removeprefix('torch.')} (random weights)\n"
    )
    table += common.format_table(
        rows, ["max_batch_tokens", "windows_per_batch", "seconds", "docs_per_s", "tokens_per_s", "compress_memory_mb"]
    )
    if tok and "docs_per_s" in tok:
        table += f"\ntokenization (CPU, batched): {tok['docs_per_s']:,.0f} docs/s, {tok['tokens_per_s']:,.0f} tokens/s"
    plots = []
    if not args.no_plot:
        p = common.plot(
            common.output_dir(args, device) / f"indexing_{shape.name}{args.tag}.png",
            {"IC-Former": ([r["windows_per_batch"] for r in rows], [r["docs_per_s"] for r in rows])},
            title=f"indexing throughput, {shape.name} ({device.type})",
            xlabel="windows per batch",
            ylabel="documents / s",
        )
        if p:
            plots.append(str(p))
    payload = {
        "shape": shape.__dict__,
        "dtype": str(dtype).removeprefix("torch."),
        "args": vars(args),
        "corpus_tokens": tokens,
        "rows": rows,
        "best": {"max_batch_tokens": best["max_batch_tokens"], "docs_per_s": best["docs_per_s"]},
        "tokenization": tok,
        "plots": plots,
    }
    return common.finish(f"indexing_{shape.name}", args, device, payload, table)


if __name__ == "__main__":
    main()
