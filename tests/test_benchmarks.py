"""Smoke tests of benchmarks/: each benchmark at its smallest size on tiny shapes (CPU, seconds). They check the
output's structure (JSON keys, positive numbers, the table printed last, the plot written), never timings."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from benchmarks import common, compression, indexing, rag_latency, run_all, summarize, targets

SMOKE = ["--threads", "1", "--repeats", "1", "--warmup", "0"]
# The `bench` extra (peft, matplotlib) may be missing (CI installs the other extras): the scripts are still
# smoke-tested, without the LoRA baseline and without plots.
HAS_PEFT = importlib.util.find_spec("peft") is not None
HAS_MPL = importlib.util.find_spec("matplotlib") is not None
METHODS = {"icformer", "icae", "prefill", "lingua"} if HAS_PEFT else {"icformer", "prefill", "lingua"}


def _positive(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _load(payload: dict) -> dict:
    path = Path(payload["json_path"])
    assert path.is_file()
    data = json.loads(path.read_text())
    for key in ("benchmark", "environment", "note", "rows", "table", "args"):
        assert key in data, key
    env = data["environment"]
    assert env["versions"]["torch"] and env["python"] and env["device"] == "cpu" and env["cpu_count"] >= 1
    assert "random weights" in data["note"]
    return data


def test_time_call_rotates_inputs_and_reports_raw_times():
    seen = []
    timing = common.time_call(seen.append, [1, 2, 3], torch.device("cpu"), warmup=1, repeats=5)
    assert seen == [1, 2, 3, 1, 2, 3]  # one warm-up, five timed calls, inputs rotated
    assert timing["repeats"] == 5 and len(timing["times_s"]) == 5
    assert timing["min_s"] <= timing["median_s"] <= timing["max_s"]


def test_time_call_stops_early_past_max_seconds():
    import time

    timing = common.time_call(
        lambda _: time.sleep(0.01), [0], torch.device("cpu"), warmup=0, repeats=50, max_seconds=0.02
    )
    assert timing["repeats"] == 3


def test_count_flops_of_a_matmul():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert common.count_flops(lambda: a @ b) == 2 * 8 * 16 * 4


def test_fused_attention_flops_count_grouped_query_heads():
    # The GPU's fused SDPA kernels see 9 query heads against 3 key/value heads (SmolLM2 with enable_gqa); torch
    # 2.11's counter asserted on that. The mapping is called as the counter calls it (tensors -> shapes).
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=common._gqa_sdpa_mapping())
    q, kv = torch.empty(2, 9, 128, 64), torch.empty(2, 3, 640, 64)
    ops = common._gqa_sdpa_mapping()
    assert torch.ops.aten._scaled_dot_product_flash_attention in ops
    for op in ops:
        # dense attention with the key/value heads repeated: two products of 2*b*h*s_q*s_k*d each
        assert counter.flop_registry[op](q, kv, kv, out_val=None) == 2 * (2 * 2 * 9 * 128 * 640 * 64)


def test_format_table():
    text = common.format_table([{"a": 1.23456, "b": None}, {"a": 12345.0, "b": "x"}], ["a", "b"])
    assert text.splitlines()[0] == "| a | b |" and "12,345" in text and "1.23" in text


def test_smollm2_shape_matches_the_default_llm_config():
    from icformer_rag.llm import DEFAULT_LLM, cache_dir

    path = cache_dir() / "models" / DEFAULT_LLM / "config.json"
    if not path.is_file():
        pytest.skip("the default LLM is not converted on this machine")
    cfg = json.loads(path.read_text())
    shape = common.SHAPES["smollm2"]
    assert (
        shape.hidden_size,
        shape.num_layers,
        shape.num_heads,
        shape.num_kv_heads,
        shape.intermediate_size,
        shape.vocab_size,
    ) == (
        cfg["hidden_size"],
        cfg["num_hidden_layers"],
        cfg["num_attention_heads"],
        cfg["num_key_value_heads"],
        cfg["intermediate_size"],
        cfg["vocab_size"],
    )
    assert shape.rope_theta == cfg["rope_parameters"]["rope_theta"]


def test_compression_smoke(tmp_path, capsys):
    payload = compression.main(
        [
            "--shape",
            "tiny",
            "--sizes",
            "32",
            "64",
            "--batches",
            "1",
            "2",
            "--methods",
            ",".join(sorted(METHODS)),
            "--out",
            str(tmp_path),
            *SMOKE,
        ]
    )
    data = _load(payload)
    rows = data["rows"]
    assert {r["method"] for r in rows} == METHODS
    assert {(r["mode"], r["n"]) for r in rows} == {("length", 32), ("length", 64), ("batch", 32), ("batch", 64)}
    for r in rows:
        assert "error" not in r
        for key in ("time_s", "time_per_token_us", "tokens_per_s", "flops", "peak_memory_mb"):
            assert _positive(r[key]), (r["method"], key, r[key])
        assert r["timing"]["times_s"]
    # IC-Former's FLOPs are a fraction of the LLM-based encoder's, at every point.
    for c in data["comparisons"]:
        assert _positive(c["prefill_time_ratio"]) and _positive(c["lingua_time_ratio"])
        if HAS_PEFT:
            assert c["icae_flop_ratio"] > 1 and _positive(c["icae_time_ratio"])
    assert data["matmul_rate"]["flop_per_s"] > 0
    assert data["lora"]["rank"] == 128 and data["icformer_parameters"] > 0
    assert any(t["target"].startswith("IC-Former time per token") for t in data["targets"])
    assert all(Path(p).is_file() for p in data["plots"]) and len(data["plots"]) == (2 if HAS_MPL else 0)
    out = capsys.readouterr().out
    assert out.rstrip().endswith(data["table"].rstrip())  # the table is printed last
    assert "| mode | n |" in out
    # Repeated runs combine into one table (median over runs, range across them).
    text = summarize.main([payload["json_path"], payload["json_path"]])
    assert "| one document | 32 | 1 |" in text and "2 runs" in text
    # The targets report reads the folder: on a CPU the GPU targets are informational, never "met".
    report = targets.main([str(tmp_path)])
    linear = next(t for t in report["targets"] if t["target"].endswith("largest/smallest n"))
    assert linear["target"].startswith("compression_tiny: ") and linear["checked_runs"] == 0
    assert linear["best_over_goal"] == pytest.approx(linear["runs"][0]["measured"] / 2)
    assert (tmp_path / "targets.json").is_file()
    (tmp_path / "why.json").write_text(json.dumps({"compression_tiny: no such target": "x"}))
    with pytest.raises(SystemExit):  # an explanation for a target no run checked is a typo, not a note
        targets.main([str(tmp_path)])


def test_targets_of_the_committed_gpu_results(tmp_path):
    # The device runs' JSONs, as committed: every explanation in why.json names a target some run checked, and
    # each goal parses.
    folder = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "gpu"
    report = targets.main([str(folder), "--out", str(tmp_path / "t.json")])
    by_name = {t["target"]: t for t in report["targets"]}
    assert len(by_name) >= 9
    why = json.loads((folder / "why.json").read_text())
    for name in why:
        assert by_name[name]["why"] == why[name]
        assert by_name[name]["met_runs"] < by_name[name]["checked_runs"]  # explained: missed in some run
    assert targets.parse_goal(">= 30x (IC-Former <= 1/30)") == (">=", 30.0)
    assert targets.parse_goal("< 1 ms") == ("<", 1.0)
    with pytest.raises(ValueError):
        targets.parse_goal("fast")


def test_compression_rejects_sizes_off_the_window(tmp_path):
    with pytest.raises(SystemExit):
        compression.main(["--shape", "tiny", "--sizes", "33", "--batches", "1", "--out", str(tmp_path), *SMOKE])


def test_rag_latency_smoke(tmp_path, capsys, tokenizer):
    payload = rag_latency.main(
        [
            "--model",
            "tiny",
            "--docs",
            "2",
            "--doc-tokens",
            "64",
            "--new-tokens",
            "2",
            "--total-repeats",
            "1",
            "--out",
            str(tmp_path),
            *SMOKE,
        ]
    )
    data = _load(payload)
    rows = {r["mode"]: r for r in data["rows"]}
    assert set(rows) == {"full", "query", "precomputed"}
    for mode, r in rows.items():
        for key in ("ttft_s", "total_s", "generate_s", "prompt_positions"):
            assert _positive(r[key]), (mode, key)
        assert _positive(r["stages_median_s"]["prefill_s"]) and _positive(r["prefill_forward"]["median_s"])
    assert _positive(rows["query"]["stages_median_s"]["compress_s"])
    assert "compress_s" not in rows["precomputed"]["stages_median_s"]
    # Digests shorten the prompt about 4x (two 64-token documents; the tiny compressor's ratio is 4 too).
    assert rows["precomputed"]["prompt_positions"] < rows["full"]["prompt_positions"]
    assert data["ratios"] and _positive(data["ratios"][0]["ttft_ratio_full_over_precomputed"])
    assert capsys.readouterr().out.rstrip().endswith(data["table"].rstrip())
    text = summarize.main([payload["json_path"]])
    assert "| 2 | precomputed |" in text


@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="inductor needs a C++ compiler on the CPU"
)
def test_rag_latency_with_the_compiled_compressor(tmp_path, tokenizer):
    # The path the GPU suite times with --compile (ContextCompressor.compile, inductor on the CPU here).
    payload = rag_latency.main(
        ["--model", "tiny", "--docs", "2", "--doc-tokens", "64", "--new-tokens", "2", "--total-repeats", "1"]
        + ["--compile", "--out", str(tmp_path), *SMOKE]
    )
    data = _load(payload)
    assert data["args"]["compile"] is True
    query = next(r for r in data["rows"] if r["mode"] == "query")
    assert _positive(query["stages_median_s"]["compress_s"]) and _positive(query["ttft_s"])


def test_rag_latency_times_digests_with_key_terms(tmp_path, tokenizer):
    payload = rag_latency.main(
        ["--model", "tiny", "--docs", "2", "--doc-tokens", "64", "--new-tokens", "2", "--total-repeats", "1"]
        + ["--key-terms", "--out", str(tmp_path), *SMOKE]
    )
    data = _load(payload)
    rows = {r["mode"]: r for r in data["rows"]}
    assert set(rows) == {"full", "query", "precomputed", rag_latency.TERMS_MODE}
    # the synthetic documents are full of names and years: each line adds tens of positions to the digests
    assert rows["precomputed"]["prompt_positions"] + 20 < rows[rag_latency.TERMS_MODE]["prompt_positions"]
    assert _positive(data["ratios"][0][f"ttft_ratio_full_over_{rag_latency.TERMS_MODE}"])


def test_rag_latency_skips_7b_on_cpu(capsys):
    assert rag_latency.main(["--model", "llama2-7b", "--device", "cpu"]) == {"skipped": "7B shape needs a GPU"}
    assert "GPU only" in capsys.readouterr().err


def test_make_documents_have_the_asked_length(tokenizer):
    docs = rag_latency.make_documents(tokenizer, 3, 100)
    assert len(docs) == 3 and len(set(docs)) == 3
    for d in docs:
        assert abs(len(tokenizer(d, add_special_tokens=False)["input_ids"]) - 100) <= 2


def test_indexing_smoke(tmp_path, capsys):
    payload = indexing.main(
        [
            "--shape",
            "tiny",
            "--num-docs",
            "12",
            "--min-tokens",
            "20",
            "--max-tokens",
            "70",
            "--budgets",
            "64",
            "128",
            "--chunk-docs",
            "6",
            "--no-progress",
            "--out",
            str(tmp_path),
            *SMOKE,
        ]
    )
    data = _load(payload)
    assert [r["max_batch_tokens"] for r in data["rows"]] == [64, 128]
    for r in data["rows"]:
        assert _positive(r["docs_per_s"]) and _positive(r["tokens_per_s"]) and _positive(r["windows_per_s"])
    assert data["corpus_tokens"] > 12 * 20
    assert _positive(data["tokenization"]["docs_per_s"])
    assert capsys.readouterr().out.rstrip().endswith(data["table"].rstrip())


def test_run_all_smoke_prints_every_table_last(tmp_path, capsys, tokenizer):
    if not HAS_PEFT:
        pytest.skip("the smoke suite's compression part includes the LoRA baseline: pip install -e '.[bench]'")
    results = run_all.main(["--suite", "smoke", "--out", str(tmp_path), "--only", "compression,indexing"])
    assert [r["benchmark"] for r in results] == ["compression_tiny", "indexing_tiny"]
    out = capsys.readouterr().out
    tail = out[out.rindex("compression, shape tiny") :]
    assert "indexing throughput" in tail
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["compression_tiny.json", "indexing_tiny.json"]
