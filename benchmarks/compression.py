"""Compression cost: IC-Former against an ICAE-style encoder, the LLM's plain prefill and an LLMLingua-2-style
token classifier, side by side in one run (issue 5, items 1 and 2).

Two experiments:
- length: one document of n tokens (n = 512 ... 128k), cut into 512-token windows that go through each
  encoder in batches of at most --max-batch-windows windows; the plain prefill reads the n tokens as one
  sequence. Reports time per token at each n.
- batch: B documents of one 512-token window each, in one batch (B = 1 ... 128); the prefill reads B
  sequences of 512 tokens.

The four methods get the same dtype, the same attention kernel (PyTorch SDPA) and the same batching:
- icformer: `icformer_rag.modeling.ICFormer` shaped for the LLM (3 blocks, as wide as the LLM), over the LLM's
  word embeddings of each window (the embedding lookup is timed too).
- icae: the LLM itself with a LoRA adapter (peft; rank 128 on q_proj and v_proj, as in ICAE) over each window
  followed by 128 memory-token embeddings; the output is the last hidden states of the memory tokens.
- prefill: the LLM's forward over the text (use_cache=False, logits of the last position only).
- lingua: `XLMRobertaForTokenClassification` shaped like xlm-roberta-large (LLMLingua-2's encoder) over each
  window, 2 labels.
All weights are random: speed and FLOPs do not depend on weight values.

    python -m benchmarks.compression --shape smollm2                 # CPU defaults: small n
    python -m benchmarks.compression --shape llama2-7b --cuda-graph  # on the GPU
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import sys
from collections.abc import Callable
from typing import Any

import torch

from benchmarks import common

METHODS = ("icformer", "icae", "prefill", "lingua")
LABELS = {
    "icformer": "IC-Former",
    "icae": "ICAE-style (LLM + LoRA)",
    "prefill": "LLM prefill",
    "lingua": "LLMLingua-2-style classifier",
}
CPU_SIZES = (512, 2048)
GPU_SIZES = (512, 2048, 8192, 32768, 131072)
CPU_BATCHES = (1, 8)
GPU_BATCHES = (1, 8, 32, 64, 128)


class Encoders:
    """The four methods over one LLM shape, as callables on token-id batches."""

    def __init__(
        self,
        shape: common.LLMShape,
        device: torch.device,
        dtype: torch.dtype,
        methods: tuple[str, ...],
        max_positions: int,
        lora_rank: int,
        max_batch_windows: int,
        seed: int = 0,
        num_digest_tokens: int | None = None,
    ) -> None:
        from icformer_rag.modeling import ICFormer

        self.device, self.dtype, self.methods = device, dtype, methods
        self.max_batch_windows = max_batch_windows
        self.llm = common.build_llm(shape, device, dtype, max_positions=max_positions, seed=seed)
        self.embed = self.llm.get_input_embeddings()
        self.icf_config = common.icformer_config_for(self.llm.config, shape.name == "tiny", num_digest_tokens)
        self.window = self.icf_config.window_tokens
        self.memory_tokens = self.icf_config.num_digest_tokens
        self.vocab = shape.vocab_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            icf = ICFormer(self.icf_config)
            icf.reset_parameters(embedding_rms=0.02)
        self.icformer = icf.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.peft_model = None
        self.memory = None
        self.lora_rank = lora_rank
        self.xlmr = None
        if "lingua" in methods:
            self.xlmr = build_xlmr(shape.name == "tiny", device, dtype, seed)
            self.xlmr_vocab = self.xlmr.config.vocab_size
        if "icae" in methods:
            self.add_lora()

    # The ICAE-style encoder wraps a copy of the LLM with peft (which changes a model in place): the plain prefill
    # never pays for the adapter, and both stay loaded so that every point times all methods side by side.
    def add_lora(self) -> None:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=self.lora_rank,
            lora_alpha=32,
            lora_dropout=0.0,
            target_modules=["q_proj", "v_proj"],
            init_lora_weights=False,
        )  # random A and B: no zero weights in a timed product
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(2)
            self.peft_model = get_peft_model(copy.deepcopy(self.llm), config)
            self.peft_model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
            self.memory = (torch.randn(self.memory_tokens, self.llm.config.hidden_size) * 0.02).to(
                self.device, self.dtype
            )

    def lora_parameters(self) -> int:
        return sum(p.numel() for n, p in self.peft_model.named_parameters() if "lora_" in n) if self.peft_model else 0

    # ---------------------------------------------------------------------------- the methods, on id batches
    def _chunks(self, ids: torch.Tensor) -> list[torch.Tensor]:
        return list(ids.split(self.max_batch_windows))

    def run_icformer(self, windows: torch.Tensor) -> torch.Tensor:
        outs = []
        for chunk in self._chunks(windows):  # (b, W)
            mask = torch.ones(chunk.shape, dtype=torch.bool, device=chunk.device)
            outs.append(self.icformer(self.embed(chunk), mask))  # (b, M, C)
        return outs[-1]

    def run_icae(self, windows: torch.Tensor) -> torch.Tensor:
        backbone = self.peft_model.base_model.model.model  # LlamaModel with LoRA layers injected
        embed = backbone.embed_tokens
        outs = []
        for chunk in self._chunks(windows):
            x = torch.cat((embed(chunk), self.memory.expand(chunk.shape[0], -1, -1)), dim=1)  # (b, W+M, C)
            hidden = backbone(inputs_embeds=x, use_cache=False).last_hidden_state
            outs.append(hidden[:, -self.memory_tokens :])  # (b, M, C)
        return outs[-1]

    def run_prefill(self, sequences: torch.Tensor) -> torch.Tensor:
        return self.llm(input_ids=sequences, use_cache=False, logits_to_keep=1).logits  # (D, 1, V)

    def run_lingua(self, windows: torch.Tensor) -> torch.Tensor:
        outs = []
        for chunk in self._chunks(windows):
            outs.append(self.xlmr(input_ids=chunk).logits)  # (b, W, 2)
        return outs[-1]

    def inputs(self, method: str, num_sequences: int, seq_len: int, sets: int, seed: int) -> list[torch.Tensor]:
        """`sets` different random id tensors: (windows, W) for the window encoders, (D, L) for the prefill."""
        gen = torch.Generator().manual_seed(seed)
        if method == "prefill":
            shape = (num_sequences, seq_len)
        else:
            shape = (num_sequences * seq_len // self.window, self.window)
        high = self.xlmr_vocab if method == "lingua" else self.vocab
        return [torch.randint(5, high - 1, shape, generator=gen).to(self.device) for _ in range(sets)]

    def callable_for(self, method: str) -> Callable[[torch.Tensor], torch.Tensor]:
        return {
            "icformer": self.run_icformer,
            "icae": self.run_icae,
            "prefill": self.run_prefill,
            "lingua": self.run_lingua,
        }[method]


def build_xlmr(tiny: bool, device: torch.device, dtype: torch.dtype, seed: int) -> Any:
    from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification

    config = XLMRobertaConfig(**(common.XLMR_TINY if tiny else common.XLMR_LARGE), num_labels=2)
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed + 3)
        model = XLMRobertaForTokenClassification(config).to(dtype)
    return model.eval().requires_grad_(False)


def cuda_graphed(fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor) -> Callable:
    """Capture `fn` on a static input into a CUDA graph; the returned callable copies its input in and replays
    (the copy is timed too). Launch overhead, which dominates one small window, disappears."""
    static_in = example.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):
            fn(static_in)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        static_out = fn(static_in)

    def replay(x: torch.Tensor) -> torch.Tensor:
        static_in.copy_(x)
        graph.replay()
        return static_out

    replay.graph = graph  # type: ignore[attr-defined]  # keep it alive as long as the callable
    return replay


def prepare(
    enc: Encoders, method: str, variant: str, num_sequences: int, seq_len: int, args: argparse.Namespace
) -> tuple[Callable, list[torch.Tensor]]:
    """The callable of one method/variant at one point, and its rotated input sets."""
    fn = enc.callable_for(method)
    if "compile" in variant:
        fn = torch.compile(fn, dynamic=False)
    inputs = enc.inputs(method, num_sequences, seq_len, args.input_sets, seed=seq_len * 1009 + num_sequences)
    if "graph" in variant:
        fn = cuda_graphed(fn, inputs[0])
    return fn, inputs


def variants_for(enc: Encoders, mode: str, num_sequences: int, args: argparse.Namespace) -> list[str]:
    variants = ["eager"]
    if mode == "batch" and enc.device.type == "cuda" and num_sequences <= args.graph_max_windows:
        if args.cuda_graph:
            variants.append("graph")
        if args.compile:
            variants.append("compile+graph" if args.cuda_graph else "compile")
    elif args.compile and mode == "batch":
        variants.append("compile")
    return variants


def run_points(enc: Encoders, args: argparse.Namespace, rate: float | None, rows: list[dict[str, Any]]) -> None:
    """Every point: all methods and variants timed side by side (interleaved repeats), then FLOPs and memory."""
    points = [("length", 1, n) for n in args.sizes] + [("batch", b, enc.window) for b in args.batches]
    for mode, num_sequences, seq_len in points:
        tokens = num_sequences * seq_len
        entries, meta = [], []
        for method in enc.methods:
            for variant in variants_for(enc, mode, num_sequences, args):
                base = {
                    "mode": mode,
                    "method": method,
                    "variant": variant,
                    "n": tokens,
                    "sequences": num_sequences,
                    "seq_len": seq_len,
                    "windows": tokens // enc.window,
                }
                try:
                    fn, inputs = prepare(enc, method, variant, num_sequences, seq_len, args)
                    fn(inputs[0])  # fail here (OOM, capture refused), not inside the timing loop
                except Exception as err:  # a failed variant is recorded, not fatal
                    if variant == "eager" and not args.keep_going:
                        raise
                    print(
                        f"  {method:9s} {mode:6s} n={tokens:>7d} ({variant}): FAILED {type(err).__name__}: "
                        f"{str(err)[:200]}",
                        file=sys.stderr,
                    )
                    rows.append({**base, "error": f"{type(err).__name__}: {str(err)[:500]}"})
                    _free(enc.device)
                    continue
                entries.append((fn, inputs))
                meta.append(base)
        timings = common.time_interleaved(
            entries, enc.device, warmup=args.warmup, repeats=args.repeats, max_seconds=args.max_seconds
        )
        for (fn, inputs), base, timing in zip(entries, meta, timings, strict=True):
            plain = enc.callable_for(base["method"])
            flops = common.count_flops(lambda p=plain, x=inputs[0]: p(x)) if args.flops else None
            memory = common.peak_memory(lambda f=fn, x=inputs[0]: f(x), enc.device)
            t = timing["median_s"]
            row = {
                **base,
                "time_s": t,
                "time_per_token_us": t / tokens * 1e6,
                "tokens_per_s": tokens / t,
                "flops": flops,
                "tflop_per_s": flops / t / 1e12 if flops else None,
                "fraction_of_matmul_rate": flops / t / rate if flops and rate else None,
                "peak_memory_mb": memory["peak_mb"],
                "memory": memory,
                "timing": timing,
            }
            rows.append(row)
            print(
                f"  {base['method']:9s} {mode:6s} n={tokens:>7d} ({base['variant']}): {t * 1e3:10.3f} ms "
                f"{row['time_per_token_us']:10.3f} us/token  spread {timing['spread']:.2f}",
                file=sys.stderr,
                flush=True,
            )
        del entries
        _free(enc.device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------ summary
def _best(
    rows: list[dict[str, Any]], method: str, mode: str, n: int | None = None, sequences: int | None = None
) -> dict[str, Any] | None:
    found = [
        r
        for r in rows
        if r["method"] == method
        and r["mode"] == mode
        and "error" not in r
        and (n is None or r["n"] == n)
        and (sequences is None or r["sequences"] == sequences)
    ]
    return min(found, key=lambda r: r["time_s"]) if found else None


def comparisons(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per point: each baseline's time and FLOPs over IC-Former's (best variant of each side)."""
    out = []
    points = sorted({(r["mode"], r["n"], r["sequences"]) for r in rows if r["method"] == "icformer"})
    for mode, n, seqs in points:
        icf = _best(rows, "icformer", mode, n, seqs)
        if icf is None:
            continue
        entry: dict[str, Any] = {
            "mode": mode,
            "n": n,
            "sequences": seqs,
            "windows": icf["windows"],
            "icformer_ms": icf["time_s"] * 1e3,
            "icformer_variant": icf["variant"],
            "icformer_us_per_token": icf["time_per_token_us"],
            "icformer_fraction_of_matmul_rate": icf["fraction_of_matmul_rate"],
        }
        for other in ("icae", "prefill", "lingua"):
            o = _best(rows, other, mode, n, seqs)
            if o is None:
                continue
            entry[f"{other}_ms"] = o["time_s"] * 1e3
            entry[f"{other}_variant"] = o["variant"]
            entry[f"{other}_time_ratio"] = o["time_s"] / icf["time_s"]
            if o.get("flops") and icf.get("flops"):
                entry[f"{other}_flop_ratio"] = o["flops"] / icf["flops"]
        out.append(entry)
    return out


def _target(name: str, goal: str, measured: float | None, ok: bool | None, note: str = "") -> dict[str, Any]:
    return {"target": name, "goal": goal, "measured": measured, "met": ok, "note": note}


def targets(
    shape: str, rows: list[dict[str, Any]], comps: list[dict[str, Any]], device_type: str = "cuda"
) -> list[dict[str, Any]]:
    """The issue's targets that this run can check; a missed one says by how much."""
    out = []
    batch = [c for c in comps if c["mode"] == "batch"]
    length = sorted((c for c in comps if c["mode"] == "length"), key=lambda c: c["n"])

    def at(windows: int) -> dict[str, Any] | None:
        return next((c for c in batch if c["windows"] == windows), None)

    if shape == "llama2-7b" and batch:
        # Both sides at their best batch: per-window time at each side's best B.
        icf = [r for r in rows if r["method"] == "icformer" and r["mode"] == "batch" and "error" not in r]
        icae = [r for r in rows if r["method"] == "icae" and r["mode"] == "batch" and "error" not in r]
        if icf and icae:
            best_icf = min(icf, key=lambda r: r["time_s"] / r["windows"])
            best_icae = min(icae, key=lambda r: r["time_s"] / r["windows"])
            ratio = (best_icae["time_s"] / best_icae["windows"]) / (best_icf["time_s"] / best_icf["windows"])
            out.append(
                _target(
                    "7B time ratio ICAE/IC-Former at best batches",
                    ">= 30x",
                    ratio,
                    ratio >= 30,
                    f"IC-Former best at {best_icf['windows']} windows ({best_icf['variant']}), ICAE at "
                    f"{best_icae['windows']} ({best_icae['variant']})",
                )
            )
            if best_icf.get("flops") and best_icae.get("flops"):
                fr = (best_icae["flops"] / best_icae["windows"]) / (best_icf["flops"] / best_icf["windows"])
                out.append(_target("7B FLOP ratio ICAE/IC-Former", ">= 30x (IC-Former <= 1/30)", fr, fr >= 30))
        one = at(1)
        if one and "icae_time_ratio" in one:
            r = one["icae_time_ratio"]
            out.append(
                _target(
                    "7B one 512-token window, ICAE/IC-Former time",
                    ">= 25x",
                    r,
                    r >= 25,
                    f"best variants: IC-Former {one['icformer_variant']}, ICAE {one['icae_variant']}",
                )
            )
        big = [c for c in batch if c["windows"] >= 32 and c["icformer_fraction_of_matmul_rate"]]
        if big:
            best = max(big, key=lambda c: c["icformer_fraction_of_matmul_rate"])
            f = best["icformer_fraction_of_matmul_rate"]
            out.append(
                _target(
                    "7B IC-Former fraction of measured bf16 matmul rate, >= 32 windows",
                    ">= 0.60",
                    f,
                    f >= 0.6,
                    f"at {best['windows']} windows",
                )
            )
    if shape == "smollm2" and batch:
        one = at(1)
        if one:
            ms = one["icformer_ms"]
            out.append(
                _target("576-wide: one 512-token window", "< 1 ms", ms, ms < 1.0, f"variant {one['icformer_variant']}")
            )
        w64 = at(64)
        if w64 and "icae_time_ratio" in w64:
            r = w64["icae_time_ratio"]
            out.append(
                _target(
                    "576-wide: 64 windows, ICAE/IC-Former time",
                    ">= 20x",
                    r,
                    r >= 20,
                    f"FLOP ratio {w64.get('icae_flop_ratio')}",
                )
            )
    if len(length) >= 2:
        per_tok = [c["icformer_us_per_token"] for c in length]
        spread = max(per_tok) / min(per_tok)
        slow, fast = length[per_tok.index(max(per_tok))]["n"], length[per_tok.index(min(per_tok))]["n"]
        # Which end is slow tells a fixed per-call cost (slowest at the smallest n: the GPU is not filled) from
        # superlinear growth (slowest at the largest n).
        note = f"n = {length[0]['n']} .. {length[-1]['n']}; slowest per token at n = {slow}, fastest at n = {fast}"
        pre = [(c["n"], c["prefill_ms"] / c["n"]) for c in length if "prefill_ms" in c]
        if len(pre) >= 2:
            note += f"; prefill time per token grows {pre[-1][1] / pre[0][1]:.2f}x over the same range"
        out.append(_target("IC-Former time per token, largest/smallest n", "< 2x (linear)", spread, spread < 2, note))
    if device_type != "cuda":  # the compression targets are H100 numbers: on a CPU they only inform
        for t in out:
            t["met"] = None
            t["note"] = ("GPU target, informational here; " + t["note"]).rstrip("; ")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="smollm2", choices=sorted(common.SHAPES))
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        default=None,
        help=f"document lengths n for the length experiment (default CPU {CPU_SIZES}, GPU {GPU_SIZES})",
    )
    parser.add_argument(
        "--batches",
        type=int,
        nargs="*",
        default=None,
        help=f"windows per batch, batch experiment (default CPU {CPU_BATCHES}, GPU {GPU_BATCHES})",
    )
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument(
        "--max-batch-windows",
        type=int,
        default=64,
        help="windows per forward for every window encoder (same batching for all)",
    )
    parser.add_argument("--lora-rank", type=int, default=128, help="LoRA rank of the ICAE-style encoder")
    parser.add_argument(
        "--num-digest-tokens",
        type=int,
        default=None,
        help="digests (and ICAE memory tokens) per 512-token window (default 128, the paper's 4x; the shipped: 256)",
    )
    parser.add_argument("--input-sets", type=int, default=3, help="input sets rotated between timed calls")
    parser.add_argument("--min-seconds", type=float, default=0.0, help="keep repeating until this much was timed")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=20.0,
        help="stop repeating a point (after 3 repeats) once this much was timed",
    )
    parser.add_argument("--cuda-graph", action="store_true", help="also time CUDA-graph replays (batch points)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd versions (batch points)")
    parser.add_argument("--graph-max-windows", type=int, default=64, help="largest batch given a graph/compile variant")
    parser.add_argument("--no-flops", dest="flops", action="store_false", help="skip FLOP counting")
    parser.add_argument("--keep-going", action="store_true", help="record a failed eager point and go on")
    args = parser.parse_args(argv)
    common.apply_threads(args)

    device, dtype = common.resolve(args.device, args.dtype)
    gpu = device.type == "cuda"
    args.sizes = args.sizes if args.sizes is not None else list(GPU_SIZES if gpu else CPU_SIZES)
    args.batches = args.batches if args.batches is not None else list(GPU_BATCHES if gpu else CPU_BATCHES)
    args.repeats = args.repeats or (10 if gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if unknown := set(methods) - set(METHODS):
        parser.error(f"unknown methods {sorted(unknown)}")
    if "icformer" not in methods:
        parser.error("the methods must include icformer (everything is compared with it)")
    shape = common.SHAPES[args.shape]
    torch.manual_seed(0)

    enc = Encoders(
        shape,
        device,
        dtype,
        methods,
        max_positions=max(args.sizes + [8192]) + 1,
        lora_rank=args.lora_rank,
        num_digest_tokens=args.num_digest_tokens,
        max_batch_windows=args.max_batch_windows,
    )
    window = enc.window
    if bad := [n for n in args.sizes if n % window]:
        parser.error(f"sizes must be multiples of the window ({window} tokens): {bad}")
    print(f"shape {shape.name}, {device}, {str(dtype).removeprefix('torch.')}; {common.WEIGHTS_NOTE}", file=sys.stderr)
    mm = (
        common.matmul_rate(device, dtype)
        if device.type == "cuda" or args.shape != "tiny"
        else common.matmul_rate(device, dtype, size=256, repeats=2)
    )
    rate = mm["flop_per_s"]
    print(f"measured {mm['dtype']} matmul rate: {mm['tflop_per_s']:.2f} TFLOP/s (n={mm['size']})", file=sys.stderr)

    rows: list[dict[str, Any]] = []
    run_points(enc, args, rate, rows)

    comps = comparisons(rows)
    checks = targets(shape.name, rows, comps, device.type)
    table_rows = []
    for c in comps:
        table_rows.append(
            {
                "mode": c["mode"],
                "n": c["n"],
                "windows": c["windows"],
                "IC-Former ms": c["icformer_ms"],
                "us/token": c["icformer_us_per_token"],
                "ICAE ms": c.get("icae_ms"),
                "ICAE/ICF time": c.get("icae_time_ratio"),
                "ICAE/ICF FLOPs": c.get("icae_flop_ratio"),
                "prefill ms": c.get("prefill_ms"),
                "prefill/ICF": c.get("prefill_time_ratio"),
                "LLMLingua-2 ms": c.get("lingua_ms"),
                "ICF matmul frac": c.get("icformer_fraction_of_matmul_rate"),
            }
        )
    cols = [
        "mode",
        "n",
        "windows",
        "IC-Former ms",
        "us/token",
        "ICAE ms",
        "ICAE/ICF time",
        "ICAE/ICF FLOPs",
        "prefill ms",
        "prefill/ICF",
        "LLMLingua-2 ms",
        "ICF matmul frac",
    ]
    table = f"compression, shape {shape.name}, {device}, {str(dtype).removeprefix('torch.')} (random weights)\n"
    table += common.format_table(table_rows, cols)
    if checks:
        table += "\n\n" + common.format_table(
            [{**t, "met": {True: "yes", False: "NO", None: "?"}[t["met"]]} for t in checks],
            ["target", "goal", "measured", "met", "note"],
        )

    out = common.output_dir(args, device)
    plots = []
    if not args.no_plot:
        for mode, xkey, ykey, ylabel in (
            ("length", "n", "time_per_token_us", "time per token (us)"),
            ("batch", "windows", "time_s", "time per batch (s)"),
        ):
            series = {}
            for m in methods:
                best = sorted(
                    (r for r in rows if r["method"] == m and r["mode"] == mode and "error" not in r),
                    key=lambda r: r[xkey],
                )
                xs, ys = [], []
                for x in sorted({r[xkey] for r in best}):
                    xs.append(x)
                    ys.append(min(r[ykey] for r in best if r[xkey] == x))
                series[LABELS[m]] = (xs, ys)
            p = common.plot(
                out / f"compression_{shape.name}_{mode}{args.tag}.png",
                series,
                title=f"{shape.name} ({device.type}, {str(dtype).removeprefix('torch.')}), {mode}",
                xlabel="context tokens n" if mode == "length" else "windows in the batch",
                ylabel=ylabel,
            )
            if p:
                plots.append(str(p))
    payload = {
        "shape": dataclasses.asdict(shape),
        "dtype": str(dtype).removeprefix("torch."),
        "icformer_config": {k: v for k, v in enc.icf_config.to_dict().items() if k != "llm"},
        "icformer_parameters": enc.icformer.num_parameters(),
        "llm_parameters": sum(p.numel() for p in enc.llm.parameters()),
        "lora": {
            "rank": args.lora_rank,
            "targets": ["q_proj", "v_proj"],
            "memory_tokens": enc.memory_tokens,
            "parameters": enc.lora_parameters(),
        },
        "attention": "torch.nn.functional.scaled_dot_product_attention for all four methods",
        "args": {k: v for k, v in vars(args).items()},
        "matmul_rate": mm,
        "rows": rows,
        "comparisons": comps,
        "targets": checks,
        "plots": plots,
    }
    return common.finish(f"compression_{shape.name}", args, device, payload, table)


if __name__ == "__main__":
    main()
