"""Smoke tests of the training scripts a GPU session runs (`scripts/`, `scripts/gpu/`, the probes): at their smallest
size on the CPU, with the real default LLM and the shipped checkpoint, so that a broken script is found here and not
in a device call. They check the output's structure, not timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_bench_train_step_times_eager_and_compiled(tmp_path):
    out = tmp_path / "bench.json"
    args = ("--batch", "1", "--length", "16", "--steps", "2", "--warmup", "1", "--device", "cpu", "--json", str(out))
    done = run_script("bench_train_step.py", *args)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [r["variant"] for r in report["rows"]] == ["eager", "compiled"]
    for row in report["rows"]:
        assert len(row["times_s"]) == 2 and row["median_step_s"] > 0 and row["target_tokens_per_s"] > 0
    assert report["speedup"] == pytest.approx(report["rows"][0]["median_step_s"] / report["rows"][1]["median_step_s"])
    assert "compiled / eager speed-up" in done.stdout


@pytest.mark.slow
def test_probe_position_accuracy_on_a_tiny_corpus(tmp_path):
    """`python -m icformer_rag.training.probes` with the shipped checkpoint (tests/test_probes.py: the library
    code on a tiny random model)."""
    from test_training import write_corpus

    data = write_corpus(tmp_path / "c", doc_tokens=200)
    out = tmp_path / "probe.json"
    done = subprocess.run(
        [sys.executable, "-m", "icformer_rag.training.probes", "--data-dir", str(data), "--windows", "2",
         "--length", "32", "--json", str(out)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"shipped", "fresh (no information)"}
    for stats in report["results"].values():
        assert len(stats["acc"]) == len(stats["loss"]) == 32
        assert all(0 <= a <= 1 for a in stats["acc"]) and all(x > 0 for x in stats["loss"])
    assert "| shipped |" in done.stdout


def test_device_job_refuses_to_run_outside_the_repository_root(tmp_path):
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu" / "device_job.sh"), "put"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "run it from the repository root" in done.stderr
    assert not (tmp_path / "scripts").exists()
