"""Evaluation metrics, the eval on a tiny model, and the shipped checkpoint against a fresh compressor."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_training import tiny_llm, write_corpus  # tests/ is on sys.path (pytest rootdir import)

from icformer_rag.compressor import ContextCompressor, default_checkpoint
from icformer_rag.data.instruct import answer_in
from icformer_rag.eval import corpus_bleu, eval_autoencoding, eval_qa, reconstruct, token_accuracy
from icformer_rag.eval_run import format_table
from icformer_rag.generation import SoftPromptLM
from icformer_rag.llm import load_tokenizer
from icformer_rag.reader import adapter_scope
from icformer_rag.training.objectives import autoencoding_loss

SAMPLES = Path(__file__).resolve().parents[1] / "icformer_rag" / "samples"


def test_bleu_known_values():
    ref = [[1, 2, 3, 4, 5, 6]]
    assert corpus_bleu(ref, ref) == pytest.approx(1.0)
    # clipped precisions 5/6, 4/5, 3/4, 2/3, no brevity penalty: geometric mean = (1/3) ** (1/4)
    assert corpus_bleu(ref, [[1, 2, 3, 4, 5, 7]]) == pytest.approx((1 / 3) ** 0.25)
    # a shorter hypothesis pays the brevity penalty exp(1 - 6/5)
    assert corpus_bleu(ref, [[1, 2, 3, 4, 5]]) == pytest.approx(math.exp(1 - 6 / 5))
    assert corpus_bleu(ref, [[6, 5, 4, 3, 2, 1]]) == 0.0
    assert corpus_bleu(ref, [[1, 1, 1, 1, 1, 1]]) == 0.0  # clipping: one "1" counts once
    with pytest.raises(ValueError):
        corpus_bleu(ref, [])


def test_token_accuracy():
    assert token_accuracy([[1, 2, 3, 4]], [[1, 9, 3, 9]]) == 0.5
    assert token_accuracy([[1, 2]], [[1]]) == 0.5
    assert token_accuracy([[1, 2], [3]], [[1, 2], [3]]) == 1.0


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_eval_on_tiny_model(tok, tmp_path):
    llm = tiny_llm(len(tok))
    comp = ContextCompressor.from_llm(
        llm, tok, num_blocks=2, num_digest_tokens=8, window_tokens=32, intermediate_size=128
    )
    data = write_corpus(tmp_path / "c")
    ae = eval_autoencoding(comp, llm, data, num_windows=4, lengths=(32, 16), batch_size=2)
    assert set(ae) == {"32", "16"}
    for r in ae.values():
        assert 0.0 <= r["bleu4"] <= 1.0 and 0.0 <= r["token_acc"] <= 1.0 and r["windows"] == 4
    # reconstructions have exactly the window's length
    rec = reconstruct(comp, llm, [[5, 6, 7, 8, 9, 10, 11, 12]])
    assert len(rec) == 1 and len(rec[0]) == 8

    lm = SoftPromptLM(llm, tok, comp)
    records = [
        {"context": "Ada Krenn founded Velmora in 1723.", "question": "Who founded Velmora?", "answer": "Ada"},
        {"context": "The Osk is 40 km long.", "question": "How long is the Osk?", "answer": "40 km", "kind": "num"},
        {"context": "Tam drew 3 maps.", "question": "How many maps did Tam draw?", "answer": "3", "kind": "num"},
    ]
    qa = eval_qa(lm, records, batch_size=2, max_new_tokens=4, show_progress=False)
    modes = {"full_text", "digests", "no_context"}
    assert set(qa["accuracy"]) == modes
    assert qa["examples"] == 3 and len(qa["samples"]) == 3
    assert all(0.0 <= v <= 1.0 for v in qa["accuracy"].values())
    # Every record's verdict is kept, per kind too ("qa" when the record names none), and they add up.
    assert [c["kind"] for c in qa["correct"]] == ["qa", "num", "num"]
    for s, c, r in zip(qa["samples"], qa["correct"], records, strict=True):
        assert all(c[m] == answer_in(r["answer"], s[m]) for m in modes)
    assert {k: v["examples"] for k, v in qa["by_kind"].items()} == {"num": 2, "qa": 1}
    for m in modes:
        assert qa["by_kind"]["num"][m] == sum(c[m] for c in qa["correct"][1:]) / 2
        assert qa["accuracy"][m] == sum(c[m] for c in qa["correct"]) / 3
    table = format_table({"autoencoding": ae, "qa": qa})
    assert "AE BLEU-4 (32 tokens" in table and "QA accuracy, digests" in table and "num" in table


def test_eval_qa_with_key_terms(tok):
    """--key-terms adds two modes: digests followed by the context's names-and-numbers line, and the line alone;
    each mode's answers are exactly what SoftPromptLM gives for those contexts."""
    from icformer_rag.eval import qa_answers
    from icformer_rag.generation import GenerationSettings
    from icformer_rag.key_terms import key_terms_line

    llm = tiny_llm(len(tok))
    comp = ContextCompressor.from_llm(
        llm, tok, num_blocks=2, num_digest_tokens=8, window_tokens=32, intermediate_size=128
    )
    lm = SoftPromptLM(llm, tok, comp)
    records = [
        {"context": "Ada Krenn founded Velmora in 1723.", "question": "Who founded Velmora?", "answer": "Ada"},
        {"context": "it rained.", "question": "Did it rain?", "answer": "yes"},  # no key terms: no line at all
    ]
    qa = eval_qa(lm, records, batch_size=2, max_new_tokens=4, show_progress=False, key_terms=True)
    assert set(qa["accuracy"]) == {"full_text", "digests", "no_context", "digests_key_terms", "key_terms"}
    assert qa["digest_key_terms_over_full"] is None or qa["digest_key_terms_over_full"] >= 0
    assert "digests+terms" in format_table({"qa": qa})
    settings = GenerationSettings(max_new_tokens=4)
    questions = [r["question"] for r in records]
    digests = comp.compress([r["context"] for r in records])
    line = key_terms_line(records[0]["context"])
    assert line == "Names and numbers in this document: Ada Krenn; Velmora; 1723."
    answers, _ = qa_answers(lm, records, "digests_key_terms", max_new_tokens=4, show_progress=False)
    assert answers == lm.generate_batch(questions, [[digests[0], line], [digests[1]]], settings)
    answers, _ = qa_answers(lm, records, "key_terms", max_new_tokens=4, show_progress=False)
    assert answers == lm.generate_batch(questions, [[line], []], settings)
    assert [s["key_terms"] for s in qa["samples"]] == answers


def _eval_args(*argv: str):
    """The EvalConfig of `icformer-rag eval`'s options."""
    import argparse

    from icformer_rag.cli.eval import add_eval_arguments, eval_config

    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    return eval_config(parser.parse_args(list(argv)))


def test_eval_of_several_checkpoints_shares_the_baselines(tok, llm_factory, compressor_kwargs, tmp_path):
    """`icformer-rag eval --checkpoint A B` generates the full-text and no-context answers once and gives
    each checkpoint the report a run of its own gives it."""
    from icformer_rag.eval_run import run_eval

    llm = llm_factory(len(tok))
    llm.save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    ckpts = []
    for seed in (1, 2):
        c = ContextCompressor.from_llm(llm, tok, seed=seed, **compressor_kwargs)
        c.save_pretrained(tmp_path / f"c{seed}")
        ckpts.append(str(tmp_path / f"c{seed}"))
    data = write_corpus(tmp_path / "corpus")
    qa = tmp_path / "qa.jsonl"
    rows = [
        {"context": "Ada Krenn founded Velmora in 1723.", "question": "Who founded Velmora?", "answer": "Ada"},
        {"context": "The Osk is 40 km long.", "question": "How long is the Osk?", "answer": "40 km", "kind": "num"},
        {"context": "Tam drew 3 maps.", "question": "How many maps did Tam draw?", "answer": "3", "kind": "num"},
    ]
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--llm", str(tmp_path / "llm"), "--device", "cpu", "--data-dir", str(data), "--ae-windows", "2"]
    common += ["--ae-lengths", "16", "--qa", str(qa), "--batch-size", "2"]
    out = tmp_path / "both.json"
    both = run_eval(_eval_args(*common, "--checkpoint", *ckpts, "--out", str(out)))
    assert json.loads(out.read_text()) == both
    assert [r["checkpoint"] for r in both["checkpoints"]] == ckpts
    for ckpt, shared in zip(ckpts, both["checkpoints"], strict=True):
        alone = run_eval(_eval_args(*common, "--checkpoint", ckpt))
        assert alone["qa"]["baselines_shared"] == []
        assert shared["qa"]["baselines_shared"] == ["full_text", "no_context"]
        assert shared["fingerprint"] == alone["fingerprint"]
        assert shared["autoencoding"] == alone["autoencoding"]
        for key in ("accuracy", "correct", "samples", "by_kind"):
            assert shared["qa"][key] == alone["qa"][key], key
    # The two checkpoints differ, so their digest answers are their own, not one shared copy.
    assert both["checkpoints"][0]["fingerprint"] != both["checkpoints"][1]["fingerprint"]
    # A checkpoint that fails after others finished (a cut-off device call fails the same way) leaves their reports.
    (tmp_path / "broken").mkdir()
    partial = tmp_path / "partial.json"
    with pytest.raises(FileNotFoundError):
        run_eval(_eval_args(*common, "--checkpoint", *ckpts, str(tmp_path / "broken"), "--out", str(partial)))
    kept = json.loads(partial.read_text())
    assert kept["partial"] and [r["checkpoint"] for r in kept["checkpoints"]] == ckpts
    for got, want in zip(kept["checkpoints"], both["checkpoints"], strict=True):
        assert got["fingerprint"] == want["fingerprint"] and got["qa"]["correct"] == want["qa"]["correct"]


def test_eval_autoencoding_refuses_zero_windows(tok, tmp_path):
    from icformer_rag.eval import eval_autoencoding

    llm = tiny_llm(len(tok))
    comp = ContextCompressor.from_llm(llm, tok, num_blocks=2, num_digest_tokens=8, window_tokens=32)
    with pytest.raises(ValueError, match="num_windows must be >= 1, got 0"):
        eval_autoencoding(comp, llm, write_corpus(tmp_path / "c"), num_windows=0, lengths=(16,))


def test_eval_refuses_bad_checkpoint_arguments(tmp_path):
    from icformer_rag.eval_run import run_eval

    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        run_eval(_eval_args("--checkpoint", str(tmp_path / "nope"), "--qa", "x.jsonl"))
    with pytest.raises(ValueError, match="--untrained"):
        run_eval(_eval_args("--untrained", "--checkpoint", str(tmp_path), "--qa", "x.jsonl"))
    with pytest.raises(ValueError, match="--data-dir"):
        run_eval(_eval_args("--checkpoint", str(tmp_path)))
    with pytest.raises(ValueError, match="--ae-windows must be >= 1.*QA-only"):
        run_eval(_eval_args("--data-dir", str(tmp_path), "--ae-windows", "0", "--qa", "x.jsonl"))


@pytest.mark.slow
def test_shipped_checkpoint_beats_fresh_compressor(default_llm):
    """The shipped checkpoint loads against the default LLM and reconstructs passages it never saw (the
    project's own sample documents, written after its training data was fixed) better than a fresh one.

    Run 9 (31.4k steps, with its reader adapter on, as the prompt holds digests): 0.75 vs 3.90.
    Measured when run 8 shipped (30.0k steps; CPU, fp32, first 128 tokens of the 4 .txt samples): teacher-forced
    auto-encoding NLL 1.44 nats per token trained vs 3.90 fresh (greedy reconstruction BLEU-4 0.024 vs 0.0: these
    fictional passages are hard to read back word for word). The threshold below (1.0 nats) is below half the
    measured gap (1.23). (Run 6, 9.2k steps: 1.77 vs 3.90, BLEU-4 0.080; run 2, 13.1k steps: 3.46 vs 3.90.)
    """
    ckpt = default_checkpoint()
    assert ckpt is not None, "no shipped checkpoint"
    info = json.loads((ckpt / "train_info.json").read_text())
    assert info["step"] > 0
    llm, tok = default_llm
    trained = ContextCompressor.from_pretrained(None, llm, tok, allow_untrained=False)
    fresh = ContextCompressor.from_llm(llm, tok, seed=0)
    texts = [p.read_text() for p in sorted(SAMPLES.glob("*.txt"))]
    windows = torch.tensor([tok(t, add_special_tokens=False)["input_ids"][:128] for t in texts])
    with torch.no_grad():
        with adapter_scope(llm, trained.reader_name):  # its digests are read through its reader adapter
            nll_trained = autoencoding_loss(trained.model, llm, windows).loss.item()
        nll_fresh = autoencoding_loss(fresh.model, llm, windows).loss.item()
    print(f"teacher-forced AE NLL: shipped {nll_trained:.3f}, fresh {nll_fresh:.3f}")
    assert nll_trained < nll_fresh - 1.0, (nll_trained, nll_fresh)
