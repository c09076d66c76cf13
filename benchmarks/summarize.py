"""Combine repeated runs of one benchmark (JSON files written with different --tag) into one markdown table:
the median over runs of each run's median, and the range across runs (each run at another time of a shared
machine's load).

    python -m benchmarks.summarize benchmarks/results/cpu/rag_latency_smollm2_run*.json
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def _num(v: float) -> str:
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def _fmt(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return ""
    med = statistics.median(values)
    return _num(med) if len(values) == 1 else f"{_num(med)} ({_num(min(values))}-{_num(max(values))})"


def rag_table(runs: list[dict[str, Any]]) -> str:
    cells: dict[tuple[int, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        by = {(r["docs"], r["mode"]): r for r in run["rows"] if "ttft_s" in r}
        for (k, mode), r in by.items():
            c = cells[(k, mode)]
            c["positions"].append(r["prompt_positions"])
            c["ttft"].append(r["ttft_s"])
            c["compress"].append(r["stages_median_s"].get("compress_s"))
            c["prefill"].append(r["stages_median_s"]["prefill_s"])
            c["total"].append(r["total_s"])
            full = by.get((k, "full"))
            if full and mode != "full":
                c["ratio"].append(full["ttft_s"] / r["ttft_s"])
                c["total_ratio"].append(full["total_s"] / r["total_s"])
    lines = [
        "| docs | mode | prompt positions | TTFT s | compress s | prefill s | total s | TTFT full/this | "
        "total full/this |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = ["full", "query", "precomputed"]
    for (k, mode), c in sorted(cells.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]))):
        lines.append(
            f"| {k} | {mode} | {int(statistics.median(c['positions']))} | {_fmt(c['ttft'])} | "
            f"{_fmt(c['compress'])} | {_fmt(c['prefill'])} | {_fmt(c['total'])} | {_fmt(c['ratio'])} | "
            f"{_fmt(c['total_ratio'])} |"
        )
    return "\n".join(lines)


def compression_table(runs: list[dict[str, Any]]) -> str:
    cells: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for c in run["comparisons"]:
            cell = cells[(c["mode"], c["n"])]
            cell["windows"].append(c["windows"])
            cell["icf_ms"].append(c["icformer_ms"])
            cell["icf_us"].append(c["icformer_us_per_token"])
            for other in ("icae", "prefill", "lingua"):
                cell[f"{other}_ms"].append(c.get(f"{other}_ms"))
                cell[f"{other}_ratio"].append(c.get(f"{other}_time_ratio"))
                cell[f"{other}_flops"].append(c.get(f"{other}_flop_ratio"))
            cell["frac"].append(c.get("icformer_fraction_of_matmul_rate"))
    lines = [
        "| experiment | n tokens | windows | IC-Former ms | IC-Former us/token | ICAE-style ms | ICAE/IC-Former "
        "time | ICAE/IC-Former FLOPs | prefill ms | prefill/IC-Former time | prefill/IC-Former FLOPs | "
        "LLMLingua-2-style ms | IC-Former share of matmul rate |",
        "|" + "---|" * 13,
    ]
    for (mode, n), c in sorted(cells.items(), key=lambda kv: (kv[0][0] != "length", kv[0][1])):
        lines.append(
            f"| {'one document' if mode == 'length' else 'batch of 1-window docs'} | {n} | {c['windows'][0]} | "
            f"{_fmt(c['icf_ms'])} | {_fmt(c['icf_us'])} | {_fmt(c['icae_ms'])} | {_fmt(c['icae_ratio'])} | "
            f"{_fmt(c['icae_flops'])} | {_fmt(c['prefill_ms'])} | {_fmt(c['prefill_ratio'])} | "
            f"{_fmt(c['prefill_flops'])} | {_fmt(c['lingua_ms'])} | {_fmt(c['frac'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        raise SystemExit("usage: python -m benchmarks.summarize RUN.json [RUN.json ...]")
    runs = [json.loads(p.read_text()) for p in paths]
    kinds = {r["benchmark"].split("_")[0] for r in runs}
    if len(kinds) != 1:
        raise SystemExit(f"give runs of one benchmark, got {sorted(kinds)}")
    kind = kinds.pop()
    table = {"rag": rag_table, "compression": compression_table}.get(kind)
    if table is None:
        raise SystemExit(f"no summary for {kind!r} runs")
    text = f"{len(runs)} runs: " + ", ".join(p.name for p in paths) + "\n\n" + table(runs)
    print(text)
    return text


if __name__ == "__main__":
    main()
