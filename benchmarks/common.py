"""Shared benchmark machinery: model shapes, timing, peak memory, FLOP counting, JSON, tables and plots.

Timing follows the workplace's method: warm-up first, then the median of repeats, with the inputs rotated
among several sets so that caches do not flatter. On CUDA each call is timed with CUDA events; on the CPU
with `time.perf_counter`. Random weights are used wherever a shape, not a trained model, is measured:
speed and FLOPs do not depend on weight values.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

WEIGHTS_NOTE = (
    "random weights: speed, memory and FLOPs do not depend on weight values (real weights are "
    "used only where a row says so)"
)


# ------------------------------------------------------------------------------------------------ shapes
@dataclass(frozen=True)
class LLMShape:
    """A Llama-architecture LLM shape (random weights)."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    rope_theta: float = 10000.0

    def llama_config(self, max_positions: int = 8192) -> Any:
        from transformers import LlamaConfig

        return LlamaConfig(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            intermediate_size=self.intermediate_size,
            vocab_size=self.vocab_size,
            max_position_embeddings=max(max_positions, 2048),
            rope_theta=self.rope_theta,
            tie_word_embeddings=self.name == "smollm2",
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=2,
        )


# SmolLM2-135M-Instruct, the default LLM (its config.json: hidden 576, 30 layers, 9/3 heads, MLP 1536).
SHAPES = {
    "smollm2": LLMShape("smollm2", 576, 30, 9, 3, 1536, 49152, 100000.0),
    # Llama-2-7B: the paper's scale.
    "llama2-7b": LLMShape("llama2-7b", 4096, 32, 32, 32, 11008, 32000),
    # Only for the smoke tests: the same code paths in milliseconds.
    "tiny": LLMShape("tiny", 64, 2, 4, 2, 128, 49152, 100000.0),
}

# xlm-roberta-large, the encoder of LLMLingua-2.
XLMR_LARGE = dict(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    vocab_size=250002,
    max_position_embeddings=514,
    type_vocab_size=1,
)
XLMR_TINY = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    vocab_size=1000,
    max_position_embeddings=514,
    type_vocab_size=1,
)


def build_llm(
    shape: LLMShape, device: torch.device, dtype: torch.dtype, max_positions: int = 8192, seed: int = 0
) -> Any:
    """A random-weight LlamaForCausalLM of `shape`, built directly on `device` (a 7B model is not built on the
    CPU first), SDPA attention, eval mode, frozen."""
    from transformers import LlamaForCausalLM

    config = shape.llama_config(max_positions)
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    return model.eval().requires_grad_(False)


def icformer_config_for(llm_config: Any, tiny: bool = False, num_digest_tokens: int | None = None) -> Any:
    """The IC-Former measured: the paper's 128 digests per 512-token window unless `num_digest_tokens` says
    otherwise (the shipped checkpoint has 256)."""
    from icformer_rag import ICFormerConfig

    if tiny:  # tests: a small window keeps the smoke test fast, same code
        return ICFormerConfig.for_llm(llm_config, num_digest_tokens=num_digest_tokens or 8, window_tokens=32)
    return ICFormerConfig.for_llm(llm_config, num_digest_tokens=num_digest_tokens or 128)


# --------------------------------------------------------------------------------------------- hardware
def resolve(device: str | None, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    from icformer_rag.llm import resolve_device, resolve_dtype

    dev = resolve_device(device)
    return dev, resolve_dtype(dtype, dev)


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """Hardware and software versions, for the JSON."""
    info: dict[str, Any] = {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": {n: _version(n) for n in ("torch", "transformers", "peft", "icformer-rag", "numpy")},
        "device": str(device),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            gpu_memory_gb=round(props.total_memory / 2**30, 1),
            gpu_sms=props.multi_processor_count,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return info


# ------------------------------------------------------------------------------------------------ timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_one_call(fn: Callable[[Any], Any], x: Any, device: torch.device) -> float:
    """Seconds that one call `fn(x)` takes: measured with CUDA events on a CUDA device (so queued GPU work
    counts), with the wall clock elsewhere."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(x)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


def time_call(
    fn: Callable[[Any], Any],
    inputs: Sequence[Any],
    device: torch.device,
    *,
    warmup: int = 2,
    repeats: int = 5,
    min_seconds: float = 0.0,
    max_seconds: float = float("inf"),
) -> dict[str, Any]:
    """Time `fn(x)` for x rotated among `inputs`: `warmup` untimed calls, then `repeats` timed calls (more, up to
    10x, while the total is under `min_seconds`; fewer, but at least 3, once it is over `max_seconds`).
    Returns the median and every raw time (s)."""
    if not inputs:
        raise ValueError("time_call needs at least one input set")
    with torch.inference_mode():
        for i in range(warmup):
            fn(inputs[i % len(inputs)])
        synchronize(device)
        times: list[float] = []
        i = warmup  # continue the rotation: the first timed call does not reuse the last warm-up's input
        while len(times) < repeats or (sum(times) < min_seconds and len(times) < 10 * repeats):
            if len(times) >= min(3, repeats) and sum(times) > max_seconds:
                break
            times.append(time_one_call(fn, inputs[i % len(inputs)], device))
            i += 1
    return summarize(times)


def time_interleaved(
    entries: Sequence[tuple[Callable[[Any], Any], Sequence[Any]]],
    device: torch.device,
    *,
    warmup: int = 2,
    repeats: int = 5,
    max_seconds: float = float("inf"),
) -> list[dict[str, Any]]:
    """Time several callables side by side: each repeat times one call of every entry in turn (each entry's
    inputs rotated), so that a load that changes during the run (a shared machine, clocks) reaches every
    entry alike. Stops after at least 3 rounds once any entry has used `max_seconds`. One summary per entry."""
    times: list[list[float]] = [[] for _ in entries]
    with torch.inference_mode():
        for w in range(warmup):
            for fn, inputs in entries:
                fn(inputs[w % len(inputs)])
        synchronize(device)
        for r in range(repeats):
            if r >= min(3, repeats) and max(map(sum, times)) > max_seconds:
                break
            for i, (fn, inputs) in enumerate(entries):
                times[i].append(time_one_call(fn, inputs[(warmup + r) % len(inputs)], device))
    return [summarize(t) for t in times]


def summarize(times: Sequence[float]) -> dict[str, Any]:
    times = list(times)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "spread": (max(times) - min(times)) / statistics.median(times) if statistics.median(times) else 0.0,
        "repeats": len(times),
        "times_s": times,
    }


class Stopwatch:
    """Host wall-clock around a region, synchronizing the device first and last (for multi-step pipelines
    whose parts run on the host too, such as tokenization and prompt building)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0


def peak_memory(fn: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    """Peak memory of one call. CUDA: the allocator's peak above what was allocated before (exact). CPU: the
    process's peak resident set size (monotonic over the process, so an upper bound for this call)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with torch.inference_mode():
            fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_mb": peak / 2**20, "peak_above_start_mb": (peak - before) / 2**20, "kind": "cuda_allocator"}
    with torch.inference_mode():
        fn()
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mb": rss_kb / 1024, "kind": "process_peak_rss"}


def sdpa_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    """FLOPs of one fused attention call on (batch, heads, seq, dim) inputs (the flop counter passes shapes),
    grouped-query attention included: Q K^T and the product with V, for every query head."""
    b, h_q, s_q, d = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * h_q * s_q * s_k * (d + d_v)


# torch < 2.13's flop counter asserts equal head counts for the fused CUDA attention kernels, so a GQA model
# (SmolLM2: 9 query heads, 3 key/value heads) run with `enable_gqa` failed to count on the GPU (torch 2.11).
def _gqa_sdpa_mapping() -> dict[Any, Callable[..., int]]:
    aten = torch.ops.aten
    ops = (
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_cudnn_attention",
    )
    return {getattr(aten, name): sdpa_flops for name in ops if hasattr(aten, name)}


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of one call (torch.utils.flop_counter; a multiply-add counts 2; attention is
    counted as dense, a causal mask does not halve it)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_gqa_sdpa_mapping())
    with torch.inference_mode(), counter:
        fn()
    return int(counter.get_total_flops())


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int = 10) -> dict[str, Any]:
    """The measured matrix-multiply rate (FLOP/s) of this device and dtype: a square product on random data."""
    size = size or (8192 if device.type == "cuda" else 2048)
    gen = torch.Generator(device=device).manual_seed(0)
    sets = [
        (
            torch.randn(size, size, device=device, dtype=dtype, generator=gen),
            torch.randn(size, size, device=device, dtype=dtype, generator=gen),
        )
        for _ in range(2)
    ]
    timing = time_call(lambda ab: ab[0] @ ab[1], sets, device, warmup=3, repeats=repeats)
    flops = 2 * size**3
    return {
        "size": size,
        "dtype": str(dtype).removeprefix("torch."),
        "flop_per_s": flops / timing["median_s"],
        "tflop_per_s": flops / timing["median_s"] / 1e12,
        "timing": timing,
    }


# ------------------------------------------------------------------------------------------------ output
def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when present)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per point (median reported)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up calls per point")
    parser.add_argument("--out", default=None, help="folder for JSON and PNG (default benchmarks/results/<cpu|gpu>)")
    parser.add_argument("--tag", default="", help="suffix for the output file names")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's). On a shared machine 1 can be far faster: "
        "OpenMP threads that wait for a busy core stall small operations",
    )
    return parser


def apply_threads(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def output_dir(args: argparse.Namespace, device: torch.device) -> Path:
    default = Path(__file__).parent / "results" / ("gpu" if device.type == "cuda" else "cpu")
    path = Path(args.out) if args.out else default
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.write_text(json.dumps(payload, indent=1, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, (torch.dtype, torch.device, Path)):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A markdown table (also readable in a terminal)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            if v == 0:
                return "0"
            if abs(v) >= 100:
                return f"{v:,.0f}"
            if abs(v) >= 1:
                return f"{v:.2f}"
            return f"{v:.3g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def plot(
    path: Path,
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = True,
    logy: bool = True,
) -> Path | None:
    """Line plot of named (x, y) series into a PNG (matplotlib, Agg). Returns None when matplotlib is missing or
    no series has a point (e.g. a run with no length points draws no length plot)."""
    if not any(len(xs) for xs, _ in series.values()):
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot", file=sys.stderr)
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (xs, ys) in series.items():
        if len(xs):
            ax.plot(xs, ys, marker="o", label=name)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def finish(
    name: str, args: argparse.Namespace, device: torch.device, payload: dict[str, Any], table: str
) -> dict[str, Any]:
    """Write `<name><tag>.json` under the output folder, print the table last; returns what was written."""
    out = output_dir(args, device)
    payload = {"benchmark": name, "environment": environment(device), "note": WEIGHTS_NOTE, **payload, "table": table}
    path = out / f"{name}{args.tag}.json"
    payload["json_path"] = str(path)
    write_json(path, payload)
    print(f"\nwrote {path}")
    print(table)
    return payload
