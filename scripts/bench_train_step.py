"""Time one auto-encoding training step (forward + backward through the frozen LLM), eager against
`--compile-llm`, on the real default LLM and the shipped compressor.

    PYTHONPATH=. python scripts/bench_train_step.py                       # GPU when present: batch 64 x 512
    PYTHONPATH=. python scripts/bench_train_step.py --batch 4 --length 128 --steps 5   # this CPU

Same layout and dtypes as training (bf16 LLM and autocast on CUDA, fp32 on the CPU, fp32 compressor weights),
random token ids (a step's cost does not depend on them), new ids every step. The compiled variant compiles the
LLM's decoder blocks in place after the eager one is timed; its warm-up steps include the compilation, reported
apart. Prints a table and writes JSON (`--json`).
"""

from __future__ import annotations

import argparse
import json
import platform
from contextlib import nullcontext

import torch

from benchmarks.common import summarize, synchronize, time_one_call
from icformer_rag import load_compressor
from icformer_rag.training.objectives import autoencoding_loss
from icformer_rag.training.trainer import compile_frozen_llm


def time_steps(model, llm, args, device, count: int) -> list[float]:
    """Seconds of `count` training steps, each on new random windows, timed as the benchmarks time a call
    (CUDA events on a GPU). Not `benchmarks.common.time_call`: that runs under inference mode, and a step
    needs its backward."""
    vocab = llm.get_input_embeddings().num_embeddings
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def step(ids: torch.Tensor) -> None:
        with autocast:
            out = autoencoding_loss(model, llm, ids)
        out.loss.backward()
        model.zero_grad(set_to_none=True)

    inputs = [torch.randint(100, vocab, (args.batch, args.length), device=device) for _ in range(count)]
    synchronize(device)
    return [time_one_call(step, ids, device) for ids in inputs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    comp, llm, _ = load_compressor(device=str(device), dtype=dtype)
    llm.requires_grad_(False).eval()
    model = comp.model.float().train().requires_grad_(True)  # fp32 master weights, as in training
    rows = []
    for variant in ("eager", "compiled"):
        compile_s = 0.0
        if variant == "compiled":
            compile_frozen_llm(llm)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        warm = time_steps(model, llm, args, device, args.warmup)
        timing = summarize(time_steps(model, llm, args, device, args.steps))
        median = timing["median_s"]
        if variant == "compiled":
            compile_s = max(0.0, sum(warm) - median * len(warm))
        rows.append(
            {
                "variant": variant,
                "median_step_s": median,
                "min_step_s": timing["min_s"],
                "max_step_s": timing["max_s"],
                "target_tokens_per_s": args.batch * args.length / median,
                "warmup_s": sum(warm),
                "compile_s_estimate": compile_s,
                "peak_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
                "times_s": timing["times_s"],
            }
        )
    speedup = rows[0]["median_step_s"] / rows[1]["median_step_s"]
    env = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "llm_dtype": dtype,
    }
    print(f"AE step, batch {args.batch} x {args.length} tokens, {args.steps} timed steps after {args.warmup} warm-up")
    print("| variant | median step s | range s | target tokens/s | warm-up s | peak GB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        peak = "-" if r["peak_gb"] is None else f"{r['peak_gb']:.1f}"
        print(
            f"| {r['variant']} | {r['median_step_s']:.4f} | {r['min_step_s']:.4f}-{r['max_step_s']:.4f} | "
            f"{r['target_tokens_per_s']:,.0f} | {r['warmup_s']:.1f} | {peak} |"
        )
    print(f"compiled / eager speed-up: {speedup:.2f}x on {env['device']} (torch {env['torch']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "environment": env, "rows": rows, "speedup": speedup}, f, indent=2)


if __name__ == "__main__":
    main()
