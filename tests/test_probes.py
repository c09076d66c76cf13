"""The position-accuracy probe (`python -m icformer_rag.training.probes`) on a tiny random model and corpus, and the
corpus reader it shares with the trainer (:meth:`SpanSampler.leading_windows`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_training import tiny_llm, write_corpus  # tests/ is on sys.path (pytest rootdir import)

from icformer_rag.compressor import ContextCompressor
from icformer_rag.llm import load_tokenizer
from icformer_rag.training.objectives import autoencoding_loss
from icformer_rag.training.probes import (
    BUCKETS,
    bucket_names,
    bucketed,
    main,
    position_accuracy,
    position_stats,
    position_table,
)
from icformer_rag.training.sampling import SpanSampler

TINY = dict(num_blocks=2, num_digest_tokens=8, window_tokens=32, intermediate_size=128)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_leading_windows_are_the_first_long_enough_windows_in_shard_order(tmp_path):
    data = write_corpus(tmp_path / "c", doc_tokens=70)  # windows of 32, 32, 6 tokens per document
    sampler = SpanSampler(data, "heldout")
    tokens = np.fromfile(data / "heldout.bin", dtype=np.uint16)
    rows = np.load(data / "heldout.idx.npy")
    long = rows[rows[:, 1] >= 20]
    got = sampler.leading_windows(4, 20)
    assert got.shape == (4, 20) and got.dtype == np.int64
    for window, row in zip(got, long[:4], strict=True):
        assert window.tolist() == tokens[row[0] : row[0] + 20].tolist()
    assert sampler.leading_windows(4, 20).tolist() == got.tolist()  # no randomness
    assert len(sampler.leading_windows(9, 6)) == 9  # the 6-token tails count once length allows them
    with pytest.raises(ValueError, match="only 6 heldout windows of >= 32 tokens"):
        sampler.leading_windows(7, 32)
    with pytest.raises(ValueError, match=">= 1"):
        sampler.leading_windows(0, 32)


def test_position_stats_on_a_tiny_random_model(tok, tmp_path):
    llm = tiny_llm(len(tok))
    comp = ContextCompressor.from_llm(llm, tok, **TINY)
    fresh = ContextCompressor.from_llm(llm, tok, **TINY, seed=1)
    ids = torch.from_numpy(SpanSampler(write_corpus(tmp_path / "c"), "heldout").leading_windows(3, 32))
    stats = position_stats(comp, llm, ids, batch=2)  # two batches: 2 + 1 windows
    assert len(stats["acc"]) == len(stats["loss"]) == 32
    assert all(0 <= a <= 1 for a in stats["acc"]) and all(x > 0 for x in stats["loss"])
    # The mean per-position loss is the trainer's auto-encoding loss on the same windows (equal window lengths).
    with torch.no_grad():
        trained = autoencoding_loss(comp.model.eval(), llm, ids).loss.item()
    assert np.mean(stats["loss"]) == pytest.approx(trained, rel=1e-4)
    results = position_accuracy({"a": comp, "fresh": fresh}, llm, ids)
    assert results["a"] == stats and results["fresh"] != stats
    assert bucket_names() == ["0", "1-3", "4-15", "16-63", "64-"]
    assert len(BUCKETS) == 5 and len(bucketed(stats["acc"])) == 4  # 32 positions: no 64+ bucket
    assert bucketed([1.0, 0.0, 0.0, 1.0] + [0.5] * 12) == [1.0, pytest.approx(1 / 3), 0.5]
    table = position_table(results).splitlines()
    assert table[0] == "| compressor | all | 0 | 1-3 | 4-15 | 16-63 | 64- |" and len(table) == 4
    assert table[2].startswith(f"| a | {np.mean(stats['acc']):.3f} / {np.mean(stats['loss']):.2f} |")


def test_probe_cli_refuses_a_corpus_without_enough_windows(tmp_path):
    data = write_corpus(tmp_path / "c", doc_tokens=40)
    with pytest.raises(SystemExit, match="only 3 heldout windows of >= 32 tokens"):
        main(["--data-dir", str(data), "--windows", "4", "--length", "32"])
    with pytest.raises(SystemExit, match="no heldout.bin"):
        main(["--data-dir", str(tmp_path / "missing")])
