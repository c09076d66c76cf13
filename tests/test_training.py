"""Trainer tests on a tiny random Llama and a small synthetic corpus (CPU)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from transformers import LlamaConfig, LlamaForCausalLM

from icformer_rag.compressor import ContextCompressor
from icformer_rag.llm import load_tokenizer
from icformer_rag.training import TrainConfig, Trainer
from icformer_rag.training.config import ARCHITECTURE_FIELDS, ArchitectureConfig
from icformer_rag.training.invented import NamePieces, invent_names
from icformer_rag.training.objectives import (
    autoencoding_loss,
    instruct_loss,
    lm_loss,
    target_loss,
    teacher_logits,
    tokenize_instruct,
    tokenize_instruct_batch,
)
from icformer_rag.training.sampling import SpanSampler
from icformer_rag.training.trainer import lr_at


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def tiny_llm(vocab: int, tie: bool = True) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tie,
        max_position_embeddings=1024,
        initializer_range=0.2,
    )
    return LlamaForCausalLM(cfg).eval().requires_grad_(False)


def write_corpus(directory: Path, num_docs: int = 12, doc_tokens: int = 100, vocab: int = 300) -> Path:
    """Shards in the corpus format (train/heldout .bin + .idx.npy): each doc repeats a short random motif,
    so auto-encoding is learnable within a few steps."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", num_docs), ("heldout", 3)):
        tokens, rows = [], []
        offset = 0
        for d in range(n):
            motif = rng.integers(5, vocab, size=7)
            doc = np.resize(motif, doc_tokens).astype(np.uint16)
            for _w, start in enumerate(range(0, doc_tokens, 32)):
                length = min(32, doc_tokens - start)
                rows.append([offset + start, length, d, len(rows) + 1 if start + 32 < doc_tokens else -1])
            tokens.append(doc)
            offset += doc_tokens
        np.concatenate(tokens).tofile(directory / f"{split}.bin")
        np.save(directory / f"{split}.idx.npy", np.asarray(rows, dtype=np.int64))
    return directory


def small_config(data: Path, out: Path, **kw) -> TrainConfig:
    values = dict(
        data_dir=str(data),
        out_dir=str(out),
        num_blocks=2,
        num_digest_tokens=8,
        window_tokens=32,
        batch_size=4,
        max_steps=30,
        warmup_steps=2,
        window_lengths=(32, 16),
        window_weights=(0.5, 0.5),
        lm_tokens=8,
        log_every=5,
        save_every=1000,
        progress=False,
        lr=3e-3,
        min_lr=3e-4,
    )
    values.update(kw)
    # The compressor's shape is TrainConfig.architecture; given here flat, as on the command line.
    shape = {k: values.pop(k) for k in ARCHITECTURE_FIELDS if k in values}
    return TrainConfig(**values, architecture=ArchitectureConfig(**shape))


def test_config_validation():
    with pytest.raises(ValueError):
        TrainConfig(ae_fraction=0.8, instruct_fraction=0.5, instruct_file="x")
    with pytest.raises(ValueError):
        TrainConfig(instruct_fraction=0.5)
    with pytest.raises(ValueError):
        TrainConfig(window_lengths=(1024,), window_weights=(1.0,))
    with pytest.raises(ValueError):
        TrainConfig(batch_size=6, grad_accum=4)
    with pytest.raises(ValueError, match="kl_weight"):
        TrainConfig(kl_weight=-0.1)
    cfg = TrainConfig(batch_size=8)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_lr_schedule():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(5.5e-4)
    assert lr_at(110, cfg) == pytest.approx(1e-4)
    assert lr_at(500, cfg) == pytest.approx(1e-4)


def test_span_sampler_stays_inside_documents(tmp_path):
    data = write_corpus(tmp_path / "c")
    sampler = SpanSampler(data)
    tokens = np.fromfile(data / "train.bin", dtype=np.uint16)
    spans = sampler.sample(np.random.default_rng(1), 50, 40, 10)
    assert spans.shape == (50, 50)
    for row in spans:  # every span is a contiguous piece of one 100-token document
        hits = [s for s in range(0, len(tokens) - 49) if np.array_equal(tokens[s : s + 50], row)]
        assert any(s // 100 == (s + 49) // 100 for s in hits)
    with pytest.raises(ValueError):
        sampler.sample(np.random.default_rng(1), 2, 200)


@pytest.mark.parametrize("objective", ["ae", "lm", "instruct", "instruct_kl"])
def test_each_loss_decreases(objective, tok, tmp_path):
    from icformer_rag.compressor import ContextCompressor

    llm = tiny_llm(len(tok))
    comp = ContextCompressor.from_llm(
        llm, tok, num_blocks=2, num_digest_tokens=8, window_tokens=32, intermediate_size=128
    )
    model = comp.model.train().requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    windows = torch.as_tensor(np.resize(rng.integers(5, 300, size=5), (4, 32)))
    cont = windows[:, :8]
    examples = [
        tokenize_instruct(
            tok, "Ada Krenn founded Velmora in 1723.", "Who founded Velmora?", "Ada Krenn", 32, teacher=True
        ),
        tokenize_instruct(tok, "The river Osk is 40 km long.", "How long is the Osk?", "40 km", 32, teacher=True),
    ]
    losses = []
    for _ in range(25):
        if objective == "ae":
            out = autoencoding_loss(model, llm, windows)
        elif objective == "lm":
            out = lm_loss(model, llm, windows, cont)
        else:  # with the KL, the loss is cross-entropy + KL to the full-text teacher
            out = instruct_loss(model, llm, examples, kl_weight=1.0 if objective == "instruct_kl" else 0.0)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert all(p.grad is None for p in llm.parameters())  # the LLM never trains
    assert losses[-1] < losses[0] - 0.5, losses


INSTRUCT_RECORDS = [
    {"context": "Ada Krenn founded Velmora in 1723.", "prompt": "Who founded Velmora?", "answer": "Ada Krenn"},
    {"context": "The river Osk is 40 km long.", "prompt": "How long is the Osk?", "answer": "40 km"},
    # Longer than a 32-token window: the student reads several windows' digests, the teacher the whole text.
    {
        "context": " ".join(["Tam Ilves drew the map of the Osk in the spring of 1790."] * 6),
        "prompt": "Who drew the map?",
        "answer": "Tam Ilves, a surveyor from Velmora",
    },
]


def test_kl_teacher_reads_the_full_text_baseline_prompt(tok):
    """The teacher's prompt is the full-text baseline SoftPromptLM builds at inference, and its logits are a
    plain forward of the LLM over that prompt + answer at the positions that predict the answer tokens (rows
    of different lengths batched with right padding); they carry no graph."""
    from icformer_rag.compressor import ContextCompressor
    from icformer_rag.generation import SoftPromptLM

    llm = tiny_llm(len(tok))
    r = INSTRUCT_RECORDS
    examples = tokenize_instruct_batch(
        tok, [x["context"] for x in r], [x["prompt"] for x in r], [x["answer"] for x in r], teacher=True
    )
    baseline = SoftPromptLM(llm, tok)
    embed = llm.get_input_embeddings()
    for ex, x in zip(examples, r, strict=True):
        assert ex == tokenize_instruct(tok, x["context"], x["prompt"], x["answer"], 32, teacher=True)
        prompt = torch.tensor(ex.teacher_prompt_ids)
        assert torch.equal(embed(prompt), baseline.build_inputs(x["prompt"], [x["context"]]))
    assert len(examples[2].teacher_prompt_ids) > len(examples[2].contexts_ids[0]) > 2 * 32

    teacher = teacher_logits(llm, examples)
    expected = []
    for ex in examples:
        ids = torch.tensor([*ex.teacher_prompt_ids, *ex.answer_ids[:-1]])
        start = len(ex.teacher_prompt_ids) - 1  # the last prompt token predicts the first answer token
        expected.append(llm(input_ids=ids[None]).logits[0, start : start + len(ex.answer_ids)])
    assert not teacher.requires_grad
    torch.testing.assert_close(teacher, torch.cat(expected), rtol=1e-4, atol=1e-5)
    # The teacher's rows are the student's targets, one for one.
    comp = ContextCompressor.from_llm(llm, tok, num_blocks=2, num_digest_tokens=8, window_tokens=32)
    out = instruct_loss(comp.model, llm, examples, kl_weight=0.5)
    assert out.num_tokens == teacher.shape[0] == sum(len(ex.answer_ids) for ex in examples)
    assert out.kl is not None and out.kl > 0
    torch.testing.assert_close(out.loss.detach(), out.ce + 0.5 * out.kl)
    # A full-text prompt longer than the LLM's positions is refused with a clear message, not a RoPE error.
    llm.config.max_position_embeddings = len(examples[2].teacher_prompt_ids)
    with pytest.raises(ValueError, match="exceeds the LLM's"):
        teacher_logits(llm, examples)


def test_target_loss_kl_is_teacher_to_student():
    """KL(teacher || student) = sum_v p_teacher (log p_teacher - log p_student), averaged over target tokens."""
    llm = tiny_llm(50)
    torch.manual_seed(1)
    embeds = torch.randn(2, 5, 64)
    targets = torch.full((2, 5), -100)
    targets[0, 3:] = torch.tensor([4, 7])
    targets[1, 1:] = torch.tensor([1, 2, 3, 9])
    teacher = torch.randn(6, 50) * 3
    out = target_loss(llm, embeds, targets, kl_teacher_logits=teacher, kl_weight=2.0)
    student = llm(inputs_embeds=embeds).logits[targets != -100].log_softmax(-1)
    t = teacher.log_softmax(-1)
    kl = (t.exp() * (t - student)).sum(-1).mean()
    ce = torch.nn.functional.cross_entropy(student, targets[targets != -100])
    torch.testing.assert_close(out.kl, kl)
    torch.testing.assert_close(out.ce, ce)
    torch.testing.assert_close(out.loss, ce + 2.0 * kl)
    with pytest.raises(ValueError, match="teacher logits"):
        target_loss(llm, embeds, targets, kl_teacher_logits=teacher[:5], kl_weight=1.0)


def test_kl_weight_zero_runs_no_teacher(tok):
    """kl_weight = 0: one LLM forward per instruction loss, no KL, the loss unchanged; > 0: one more forward,
    which needs the full-text prompts (tokenize with teacher=True)."""
    from icformer_rag.compressor import ContextCompressor

    llm = tiny_llm(len(tok))
    comp = ContextCompressor.from_llm(llm, tok, num_blocks=2, num_digest_tokens=8, window_tokens=32)
    x = INSTRUCT_RECORDS[0]
    plain = [tokenize_instruct(tok, x["context"], x["prompt"], x["answer"], 32)]
    with_teacher = [tokenize_instruct(tok, x["context"], x["prompt"], x["answer"], 32, teacher=True)]
    assert plain[0].teacher_prompt_ids is None
    calls = []
    llm.get_decoder().register_forward_hook(lambda *_: calls.append(1))
    a = instruct_loss(comp.model, llm, plain)
    assert len(calls) == 1 and a.kl is None and torch.equal(a.loss.detach(), a.ce)
    b = instruct_loss(comp.model, llm, with_teacher, kl_weight=1.0)
    assert len(calls) == 3 and b.kl is not None
    assert b.ce == a.ce and b.loss > a.loss  # same student, plus the KL
    with pytest.raises(ValueError, match="teacher=True"):
        instruct_loss(comp.model, llm, plain, kl_weight=1.0)


def test_training_with_kl_logs_it_and_resumes_exactly(tok, tmp_path):
    """kl_weight > 0: instruction steps log the KL apart from the cross-entropy ('loss', the same as without
    the KL for the same weights), the KL changes training, and a resumed run equals an uninterrupted one."""
    data = write_corpus(tmp_path / "c")
    instruct = tmp_path / "instruct.jsonl"
    instruct.write_text("".join(json.dumps(r) + "\n" for r in INSTRUCT_RECORDS))
    kw = dict(max_steps=10, log_every=1, ae_fraction=0.4, instruct_fraction=0.4, instruct_file=str(instruct))
    # seed 0: steps 0, 6, 8 and 9 are instruction steps, on both sides of the split at step 4
    full = Trainer(small_config(data, tmp_path / "full", kl_weight=1.0, **kw), llm=tiny_llm(len(tok)), tokenizer=tok)
    full.train()
    first = Trainer(
        small_config(data, tmp_path / "split", kl_weight=1.0, stop_at_step=4, **kw),
        llm=tiny_llm(len(tok)),
        tokenizer=tok,
    )
    first.train()
    second = Trainer(small_config(data, tmp_path / "split", kl_weight=1.0, **kw), llm=tiny_llm(len(tok)), tokenizer=tok)
    assert second.step == 4
    second.train()
    for (name, a), b in zip(full.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    plain = Trainer(small_config(data, tmp_path / "plain", **kw), llm=tiny_llm(len(tok)), tokenizer=tok)
    plain.train()
    assert plain.instruct[0].teacher_prompt_ids is None  # no full-text prompts tokenized without the KL
    info = json.loads((tmp_path / "plain" / "release" / "train_info.json").read_text())
    assert info["instruct_file_sha256"] == hashlib.sha256(instruct.read_bytes()).hexdigest()

    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    plain_lines = [json.loads(x) for x in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["kind"] == "instruct"] == [1, 7, 9, 10]
    assert all((x["kind"] == "instruct") == ("kl" in x) for x in lines)
    assert all(0 < x["kl"] < 50 for x in lines if "kl" in x)
    assert not any("kl" in x for x in plain_lines)
    # Step 1 starts from the same weights in both runs: the logged loss is the cross-entropy alone.
    assert lines[0]["loss"] == pytest.approx(plain_lines[0]["loss"], rel=1e-6)
    assert lines[-1]["loss"] != pytest.approx(plain_lines[-1]["loss"], rel=1e-6)  # the KL changed training


def test_compile_llm_trains_like_eager(tok, tmp_path):
    """compile_llm compiles every decoder block of the frozen LLM in place, and training through the compiled
    blocks gives eager's losses, step by step (auto-encoding, LM and padded instruction batches at two window
    lengths), and the same weights, up to float32 rounding. The sequence length changes between steps: the
    compiled graph is reused, not recompiled per length."""
    from icformer_rag.training.trainer import decoder_blocks

    data = write_corpus(tmp_path / "c")
    instruct = tmp_path / "instruct.jsonl"
    instruct.write_text("".join(json.dumps(r) + "\n" for r in INSTRUCT_RECORDS))
    kw = dict(max_steps=8, log_every=1, ae_fraction=0.4, instruct_fraction=0.3, instruct_file=str(instruct))
    runs = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()  # count only this run's compiled frames
        trainer = Trainer(
            small_config(data, tmp_path / str(compiled), compile_llm=compiled, **kw),
            llm=tiny_llm(len(tok)),
            tokenizer=tok,
        )
        blocks = decoder_blocks(trainer.llm)
        assert len(blocks) == 2 and all((b._compiled_call_impl is not None) == compiled for b in blocks)
        trainer.train()
        lines = [json.loads(x) for x in (tmp_path / str(compiled) / "metrics.jsonl").read_text().splitlines()]
        runs[compiled] = (lines, trainer.model.state_dict())
        if compiled:
            frames = torch._dynamo.utils.counters["frames"]
            compiles = frames["ok"]
    (eager, eager_w), (comp, comp_w) = runs[False], runs[True]
    assert {x["kind"] for x in eager} == {"ae", "lm", "instruct"} and len({x["length"] for x in eager}) == 2
    assert [x["loss"] for x in comp] == pytest.approx([x["loss"] for x in eager], rel=1e-4)
    for name, w in comp_w.items():
        torch.testing.assert_close(w, eager_w[name], rtol=1e-3, atol=1e-5)
    # 5 (kind, window length) pairs here, each a different sequence length (instruction rows vary more):
    # a graph per length would be 5+, a graph per block (a KV cache in the forward guards on the layer index)
    # 4; one static graph and its dynamic-length version is 2 (+1 leeway for a masked variant).
    shapes = {(x["kind"], x["length"]) for x in eager}
    assert len(shapes) == 5 and 0 < compiles <= 3, (compiles, shapes)


def test_readout_head_learns_each_digests_own_tokens(tok):
    """The auxiliary readout loss alone (no LLM run) trains the compressor and head to put each window token
    into its own digest: accuracy far above chance, and targets are exactly the window in order."""
    from icformer_rag.compressor import ContextCompressor
    from icformer_rag.training.readout import ReadoutHead

    llm = tiny_llm(len(tok))
    comp = ContextCompressor.from_llm(llm, tok, num_blocks=2, num_digest_tokens=8, window_tokens=32)
    model = comp.model.train().requires_grad_(True)
    head = ReadoutHead(comp.config.hidden_size, comp.config.ratio)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=1e-2)
    table = llm.get_input_embeddings().weight
    windows = torch.as_tensor(np.random.default_rng(0).integers(5, 300, size=(4, 30)))  # 30 = 7.5 digests
    losses = []
    for _ in range(60):
        out = head(model(table[windows], None, num_digests=8), windows, table)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert out.num_tokens == 4 * 30
    assert losses[-1] < losses[0] - 2.0, losses
    assert out.correct / out.num_tokens > 0.5  # chance is ~1/300
    with pytest.raises(ValueError, match="cannot stand for"):
        head(model(table[windows], None, num_digests=7), windows, table)
    # row_fraction scores only the first ceil(fraction * B) windows: the same loss as the full head on those rows.
    half = ReadoutHead(comp.config.hidden_size, comp.config.ratio, row_fraction=0.4)
    half.load_state_dict(head.state_dict())
    with torch.no_grad():
        digests = model(table[windows], None, num_digests=8)
        part = half(digests, windows, table)
        ref = head(digests[:2], windows[:2], table)
    assert part.num_tokens == 2 * 30 and torch.equal(part.loss, ref.loss) and part.correct == ref.correct
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="row_fraction"):
            ReadoutHead(8, 4, row_fraction=bad)
        with pytest.raises(ValueError, match="readout_fraction"):
            TrainConfig(readout_fraction=bad)


def test_training_with_readout_logs_it_and_resumes_exactly(tok, tmp_path):
    """readout_weight > 0: the head trains with the compressor, its loss is logged apart from the LLM's, it is
    saved in resume and release checkpoints, and a resumed run equals an uninterrupted one, head included."""
    data = write_corpus(tmp_path / "c")
    kw = dict(max_steps=10, readout_weight=1.0)
    full = Trainer(small_config(data, tmp_path / "full", **kw), llm=tiny_llm(len(tok)), tokenizer=tok)
    full.train()
    first = Trainer(small_config(data, tmp_path / "split", stop_at_step=4, **kw), llm=tiny_llm(len(tok)), tokenizer=tok)
    first.train()
    assert (tmp_path / "split" / "resume" / "readout.safetensors").is_file()
    second = Trainer(small_config(data, tmp_path / "split", **kw), llm=tiny_llm(len(tok)), tokenizer=tok)
    assert second.step == 4
    second.train()
    for (name, a), b in zip(full.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(full.readout.proj.weight, second.readout.proj.weight)
    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < x["readout_loss"] < 20 and 0 <= x["readout_acc"] <= 1 for x in lines)
    assert all(x["readout_loss"] != x["loss"] for x in lines)
    # A run continued from the release (another machine) starts from the trained head, not a fresh one.
    release = tmp_path / "full" / "release"
    assert (release / "readout.safetensors").is_file()
    cont = Trainer(
        small_config(data, tmp_path / "cont", init_from=str(release), **kw), llm=tiny_llm(len(tok)), tokenizer=tok
    )
    assert torch.equal(cont.readout.proj.weight, full.readout.proj.weight)
    # Without the weight there is no head and nothing extra is logged or saved.
    plain = Trainer(small_config(data, tmp_path / "plain", max_steps=3), llm=tiny_llm(len(tok)), tokenizer=tok)
    plain.train()
    assert plain.readout is None and not (tmp_path / "plain" / "release" / "readout.safetensors").exists()
    assert "readout_loss" not in (tmp_path / "plain" / "metrics.jsonl").read_text()


def test_instruct_targets_are_the_answer(tok):
    ex = tokenize_instruct(tok, "ctx", "Who?", "Ada Krenn", 32)
    assert tok.decode(ex.answer_ids) == "Ada Krenn<|im_end|>"
    assert ex.pieces.count(0) == 1 and isinstance(ex.pieces[0], list)


def test_training_reduces_loss_and_writes_checkpoints(tok, tmp_path):
    data = write_corpus(tmp_path / "c")
    trainer = Trainer(small_config(data, tmp_path / "run", max_steps=40), llm=tiny_llm(len(tok)), tokenizer=tok)
    trainer.train()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 40
    assert lines[-1]["loss"] < lines[0]["loss"] - 1.0
    release = tmp_path / "run" / "release"
    assert (release / "model.safetensors").is_file() and (release / "train_info.json").is_file()
    assert json.loads((release / "train_info.json").read_text())["step"] == 40


def test_resume_is_exact(tok, tmp_path):
    data = write_corpus(tmp_path / "c")
    full = Trainer(small_config(data, tmp_path / "full", max_steps=12), llm=tiny_llm(len(tok)), tokenizer=tok)
    full.train()
    first = Trainer(
        small_config(data, tmp_path / "split", max_steps=12, stop_at_step=5), llm=tiny_llm(len(tok)), tokenizer=tok
    )
    first.train()
    second = Trainer(small_config(data, tmp_path / "split", max_steps=12), llm=tiny_llm(len(tok)), tokenizer=tok)
    assert second.step == 5
    second.train()
    for (name, a), b in zip(full.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_continue_from_release_keeps_step(tok, tmp_path):
    data = write_corpus(tmp_path / "c")
    Trainer(
        small_config(data, tmp_path / "a", max_steps=20, stop_at_step=6), llm=tiny_llm(len(tok)), tokenizer=tok
    ).train()
    cont = Trainer(
        small_config(data, tmp_path / "b", max_steps=20, init_from=str(tmp_path / "a" / "release")),
        llm=tiny_llm(len(tok)),
        tokenizer=tok,
    )
    assert cont.step == 6 and cont.rewarm_from == 6
    record = cont.train_step()
    assert record["lr"] < lr_at(6, cont.cfg)  # the fresh optimizer warms up again


def _train_args(*argv: str) -> TrainConfig:
    """A TrainConfig from command-line options, parsed as `icformer-rag train` parses them."""
    import argparse

    from icformer_rag.cli.train import add_train_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


def _small_args(data: Path, out: Path, *more: str) -> list[str]:
    """small_config's run settings as command-line options, without the architecture flags."""
    return [
        *("--data-dir", str(data), "--out-dir", str(out), "--batch-size", "4", "--max-steps", "3"),
        *("--warmup-steps", "1", "--lm-tokens", "8", "--no-progress", "--window-lengths", "32", "16"),
        *("--window-weights", "0.5", "0.5", *more),
    ]


def test_init_from_refuses_a_conflicting_architecture_flag_and_records_the_trained_one(tok, tmp_path):
    """Architecture flags shape a new compressor. Under --init-from one that contradicts the checkpoint was ignored
    (the shipped checkpoint's train_info.json said local_heads 0, its config.json 6): now it is refused, naming the
    flag, the given value and the checkpoint's. Left out, the checkpoint's value is used, and the config (as
    train_config.json and train_info.json record it) holds the architecture actually trained; more context layers
    still extend the checkpoint."""
    data = write_corpus(tmp_path / "c")
    shape = ("--num-blocks", "2", "--num-digest-tokens", "8", "--window-tokens", "32")
    first = _train_args(*_small_args(data, tmp_path / "a", *shape, "--local-heads", "2", "--context-layers", "1"))
    Trainer(first, llm=tiny_llm(len(tok)), tokenizer=tok).train()
    release = tmp_path / "a" / "release"
    for flag, value, have in [
        ("--local-heads", "0", "2"),
        ("--num-blocks", "3", "2"),
        ("--context-layers", "0", "1"),
        ("--window-tokens", "64", "32"),
        ("--digest-positions", "after", "spread"),
        ("--encoder", "llm", "icformer"),
    ]:
        cfg = _train_args(*_small_args(data, tmp_path / "b", "--init-from", str(release), flag, value))
        with pytest.raises(ValueError, match=rf"init_from .*{flag} {value} \(the checkpoint has {have}\)"):
            Trainer(cfg, llm=tiny_llm(len(tok)), tokenizer=tok)
    # The window lengths are checked against the checkpoint's window (32), which the config alone does not know.
    cfg = _train_args("--data-dir", str(data), "--out-dir", str(tmp_path / "b"), "--init-from", str(release))
    with pytest.raises(ValueError, match=r"window_lengths must lie in \[1, window_tokens=32\]"):
        Trainer(cfg, llm=tiny_llm(len(tok)), tokenizer=tok)

    trained = ArchitectureConfig(
        num_blocks=2,
        num_digest_tokens=8,
        window_tokens=32,
        digest_positions="spread",
        local_heads=2,
        context_layers=1,
        encoder="icformer",
        encoder_rank=16,
    )
    for out, more in (("same", ("--local-heads", "2", "--num-blocks", "2")), ("none", ())):
        cfg = _train_args(*_small_args(data, tmp_path / out, "--init-from", str(release), *more))
        assert cfg.architecture.local_heads == (2 if more else None)
        cont = Trainer(cfg, llm=tiny_llm(len(tok)), tokenizer=tok)
        assert cont.cfg.architecture == trained and cont.compressor.config.local_heads == 2
        cont.train()
        info = json.loads((tmp_path / out / "release" / "train_info.json").read_text())
        recorded = json.loads((tmp_path / out / "train_config.json").read_text())
        assert info["config"]["architecture"] == recorded["architecture"] == dataclasses.asdict(trained)
        assert TrainConfig.from_dict(info["config"]).architecture == trained
    cfg = _train_args(*_small_args(data, tmp_path / "more", "--init-from", str(release), "--context-layers", "3"))
    more = Trainer(cfg, llm=tiny_llm(len(tok)), tokenizer=tok)
    assert more.cfg.architecture.context_layers == len(more.compressor.model.context_layers) == 3


def test_resume_keeps_the_resumed_runs_architecture(tok, tmp_path):
    """A resumed run takes the architecture flags it leaves out from out_dir/resume and ends where the uninterrupted
    run does; a flag that contradicts the resumed run is refused, not loaded into the wrong layout."""
    data = write_corpus(tmp_path / "c")
    kw = dict(max_steps=8, local_heads=2, digest_positions="after")
    full = Trainer(small_config(data, tmp_path / "full", **kw), llm=tiny_llm(len(tok)), tokenizer=tok)
    full.train()
    first = small_config(data, tmp_path / "split", stop_at_step=3, **kw)
    Trainer(first, llm=tiny_llm(len(tok)), tokenizer=tok).train()
    # digest_positions: the same weights would load and silently compute something else.
    for change, match in ((dict(digest_positions="spread"), "--digest-positions spread"), (dict(local_heads=1), "")):
        cfg = small_config(data, tmp_path / "split", **{**kw, **change})
        with pytest.raises(ValueError, match=rf"resume .*{match or '--local-heads 1'} \(the checkpoint has"):
            Trainer(cfg, llm=tiny_llm(len(tok)), tokenizer=tok)
    bare = dataclasses.replace(small_config(data, tmp_path / "split", max_steps=8), architecture=ArchitectureConfig())
    second = Trainer(bare, llm=tiny_llm(len(tok)), tokenizer=tok)
    assert second.step == 3 and second.cfg.architecture == full.cfg.architecture
    second.train()
    for (name, a), b in zip(full.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_removed_options_are_gone_and_old_records_still_load(tok):
    """chunk_queries (A/B "chunk": AE loss 2.917 against spread's 2.751, not pursued), ae_input_dropout (session 4:
    not for run 7) and ae_self_feed (session 5: not for run 8) left TrainConfig and the command line. Configs
    written while they existed (train_info.json, train_config.json, --config files) hold them at their off values
    and the architecture at the top level: those load; one asking for a removed option is refused."""
    from icformer_rag.compressor import DEFAULT_CHECKPOINT

    for flag in ("--ae-self-feed", "--ae-input-dropout", "--chunk-queries"):
        with pytest.raises(SystemExit):
            _train_args(flag, "1")
    old = dict(
        num_blocks=2,
        window_tokens=32,
        local_heads=0,
        window_lengths=[32],
        window_weights=[1.0],
        chunk_queries=False,
        ae_input_dropout=0.0,
        ae_self_feed=0.0,
    )
    cfg = TrainConfig.from_dict(old)
    assert cfg.architecture == ArchitectureConfig(num_blocks=2, window_tokens=32, local_heads=0)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg and "num_blocks" not in cfg.to_dict()
    shipped = json.loads((DEFAULT_CHECKPOINT / "train_info.json").read_text())["config"]
    TrainConfig.from_dict(shipped)
    for name, on in (("chunk_queries", True), ("ae_input_dropout", 0.15), ("ae_self_feed", 0.5)):
        with pytest.raises(ValueError, match=rf"{name}.*removed"):
            TrainConfig.from_dict({**old, name: on})
        with pytest.raises(TypeError):
            TrainConfig(**{name: on})
    with pytest.raises(ValueError, match="both"):
        TrainConfig.from_dict({"num_blocks": 2, "architecture": {"num_blocks": 3}})
    with pytest.raises(ValueError, match="unknown ArchitectureConfig"):
        TrainConfig.from_dict({"architecture": {"num_block": 3}})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str, result_dir: str, readout: float) -> None:
    os.environ.update(
        WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    tok = load_tokenizer()
    trainer = Trainer(
        small_config(Path(data), Path(out), max_steps=4, device="cpu", readout_weight=readout),
        llm=tiny_llm(len(tok)),
        tokenizer=tok,
    )
    trainer.train()
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    if trainer.readout is not None:
        weights["readout"] = trainer.readout.proj.weight.detach().clone()
    torch.save(weights, f"{result_dir}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("readout", [0.0, 1.0])
def test_ddp_two_gloo_processes_agree(tmp_path, readout):
    """Both ranks end with the same weights (the readout head's too: it is averaged outside DDP)."""
    data = write_corpus(tmp_path / "c")
    args = (2, _free_port(), str(data), str(tmp_path / "run"), str(tmp_path), readout)
    mp.spawn(_ddp_worker, args=args, nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt")
    b = torch.load(tmp_path / "rank1.pt")
    tok = load_tokenizer()
    from icformer_rag.compressor import ContextCompressor

    init = ContextCompressor.from_llm(
        tiny_llm(len(tok)), tok, seed=0, num_blocks=2, num_digest_tokens=8, window_tokens=32
    ).model.state_dict()
    changed = False
    assert ("readout" in a) == (readout > 0)
    for name in a:
        assert torch.equal(a[name], b[name]), name
        changed |= name != "readout" and not torch.equal(a[name], init[name].float())
    assert changed


def _fsdp_worker(rank: int, world: int, port: int, data: str, out: str, result_dir: str, instruct: str) -> None:
    """Per LM-head layout (tied to the embeddings, or its own matrix): the same 4 steps (instruct, LM, AE, LM)
    with plain DDP, then with the LLM sharded by FSDP2, in one process group."""
    os.environ.update(
        WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    from torch.distributed.tensor import DTensor

    tok = load_tokenizer()
    result: dict = {}
    for tie in (True, False):
        for fsdp in (False, True):
            name = f"{'tied' if tie else 'untied'}-{'fsdp' if fsdp else 'ddp'}"
            kw = dict(
                max_steps=4, device="cpu", ae_fraction=0.4, instruct_fraction=0.3, instruct_file=instruct, kl_weight=0.5
            )
            cfg = small_config(Path(data), Path(out) / name, fsdp=fsdp, **kw)
            trainer = Trainer(cfg, llm=tiny_llm(len(tok), tie=tie), tokenizer=tok)
            records: list[dict] = []
            step = trainer.train_step
            trainer.train_step = lambda step=step, records=records: records.append(step()) or records[-1]
            trainer.train()
            llm = trainer.llm
            up = llm.model.layers[0].mlp.up_proj.weight
            result[name] = {
                "kinds": [r["kind"] for r in records],
                "losses": [r["loss"] for r in records],
                "kls": [r["kl"] for r in records if "kl" in r],
                "grad_norms": [r["grad_norm"] for r in records],
                "weights": {k: v.clone() for k, v in trainer.model.state_dict().items()},
                "up_proj_local_rows": (up.to_local() if isinstance(up, DTensor) else up).shape[0],
                "head_sharded": isinstance(llm.lm_head.weight, DTensor),
                "embed_plain": type(llm.get_input_embeddings().weight.data) is torch.Tensor,
                "llm_grads": [n for n, p in llm.named_parameters() if p.grad is not None or p.requires_grad],
            }
    torch.save(result, f"{result_dir}/fsdp_rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_fsdp_sharded_llm_trains_like_ddp(tok, tmp_path):
    """FSDP2 on CPU/gloo: with the frozen LLM's blocks, final norm and (untied) LM head sharded over two
    processes, every rank's loss of every step equals the plain-DDP run's (same seed and data), gradients
    still reach the compressor through the sharded LLM, and the ranks end with identical compressor weights."""
    data = write_corpus(tmp_path / "c")
    instruct = tmp_path / "instruct.jsonl"
    records = [
        {"context": "Ada Krenn founded Velmora in 1723.", "prompt": "Who founded Velmora?", "answer": "Ada Krenn"},
        {"context": "The river Osk is 40 km long.", "prompt": "How long is the Osk?", "answer": "40 km"},
        {"context": "Tam Ilves drew the map of the Osk.", "prompt": "Who drew the map?", "answer": "Tam Ilves"},
    ]
    instruct.write_text("".join(json.dumps(r) + "\n" for r in records))
    args = (2, _free_port(), str(data), str(tmp_path / "run"), str(tmp_path), str(instruct))
    mp.spawn(_fsdp_worker, args=args, nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"fsdp_rank{r}.pt") for r in range(2)]
    for layout in ("tied", "untied"):
        for res in ranks:
            ddp, fsdp = res[f"{layout}-ddp"], res[f"{layout}-fsdp"]
            assert set(fsdp["kinds"]) == {"ae", "lm", "instruct"}
            assert fsdp["losses"] == pytest.approx(ddp["losses"], rel=1e-5, abs=1e-6)
            # The KL teacher (the full-text prompt) ran through the sharded LLM as well.
            assert len(fsdp["kls"]) == 1 and fsdp["kls"][0] > 0
            assert fsdp["kls"] == pytest.approx(ddp["kls"], rel=1e-5, abs=1e-6)
            assert fsdp["grad_norms"] == pytest.approx(ddp["grad_norms"], rel=1e-4)
            assert min(fsdp["grad_norms"]) > 0  # gradients crossed the sharded LLM
            for name, w in fsdp["weights"].items():
                torch.testing.assert_close(w, ddp["weights"][name], rtol=1e-4, atol=1e-5)
            # The LLM was really sharded (half the rows of a block matrix per rank), the embedding table
            # stayed a plain tensor, the head is sharded only when it is not the embedding table, and
            # nothing of the LLM trained.
            assert fsdp["up_proj_local_rows"] == ddp["up_proj_local_rows"] // 2 == 64
            assert fsdp["embed_plain"] and fsdp["head_sharded"] == (layout == "untied")
            assert fsdp["llm_grads"] == [] and ddp["llm_grads"] == []
        a, b = (res[f"{layout}-fsdp"]["weights"] for res in ranks)
        for name in a:
            assert torch.equal(a[name], b[name]), name
        # Only the compressor was saved; its release loads on an ordinary, unsharded copy of the LLM.
        from icformer_rag.compressor import ContextCompressor

        run = tmp_path / "run" / f"{layout}-fsdp"
        assert (run / "resume" / "state.json").is_file()
        comp = ContextCompressor.from_pretrained(run / "release", tiny_llm(len(tok), tie=layout == "tied"), tok)
        for name, w in comp.model.state_dict().items():
            assert torch.equal(w, a[name].to(torch.bfloat16).to(w.dtype)), name  # the release is bf16
        assert comp.compress(["Ada Krenn founded Velmora."])[0].embeddings.shape[0] > 0


def test_init_from_widens_the_digests_by_a_multiple(tok, tmp_path):
    """--num-digest-tokens 16 from a checkpoint with 8 per 32-token window (4x -> 2x compression) widens it instead
    of refusing: each digest query becomes two copies, every other weight carries over, the readout head (another
    number of slots per digest) starts anew, the fingerprint is the new compressor's, and it trains. A count that
    is not a multiple, or fewer digests, is still refused."""
    data = write_corpus(tmp_path / "c")
    shape = ("--num-blocks", "2", "--num-digest-tokens", "8", "--window-tokens", "32", "--readout-weight", "1.0")
    Trainer(_train_args(*_small_args(data, tmp_path / "a", *shape)), llm=tiny_llm(len(tok)), tokenizer=tok).train()
    release = tmp_path / "a" / "release"
    old = ContextCompressor.from_pretrained(release, tiny_llm(len(tok)), tok)
    cfg = _train_args(
        *_small_args(
            data, tmp_path / "w", "--init-from", str(release), "--num-digest-tokens", "16", "--readout-weight", "1.0"
        )
    )
    with pytest.warns(UserWarning, match="readout head"):
        wide = Trainer(cfg, llm=tiny_llm(len(tok)), tokenizer=tok)
    assert wide.compressor.config.num_digest_tokens == 16 and wide.compressor.config.ratio == 2
    q_old, q_new = old.model.digest_embeddings, wide.compressor.model.digest_embeddings
    assert torch.equal(q_new[0::2], q_old) and torch.equal(q_new[1::2], q_old)
    for name, value in old.model.state_dict().items():
        if name != "digest_embeddings":
            assert torch.equal(wide.compressor.model.state_dict()[name], value), name
    assert wide.compressor.fingerprint != old.fingerprint
    wide.train()
    again = ContextCompressor.from_pretrained(tmp_path / "w" / "release", tiny_llm(len(tok)), tok)
    assert again.config.num_digest_tokens == 16
    for bad in ("12", "4"):
        cfg = _train_args(*_small_args(data, tmp_path / "x", "--init-from", str(release), "--num-digest-tokens", bad))
        with pytest.raises(ValueError, match="num-digest-tokens|widened"):
            Trainer(cfg, llm=tiny_llm(len(tok)), tokenizer=tok)


def test_invented_names_overwrite_about_rate_of_each_window_with_recurring_word_pieces(tok):
    pieces = NamePieces.of(tok)
    assert all(tok.decode([i])[0] == " " and tok.decode([i])[1].isupper() for i in pieces.heads[:50])
    assert all(tok.decode([i]).islower() and " " not in tok.decode([i]) for i in pieces.tails[:50])
    windows = np.random.default_rng(1).integers(5, 300, size=(6, 512))
    out = invent_names(windows, np.random.default_rng(2), 0.08, pieces)
    assert out.shape == windows.shape and not np.shares_memory(out, windows)
    changed = (out != windows).mean(axis=1)
    assert np.all((changed > 0.04) & (changed < 0.12)), changed
    assert set(out[out != windows].tolist()) <= set(pieces.heads.tolist()) | set(pieces.tails.tolist())
    # Names recur: some head piece that was spliced in appears at least twice in its row.
    assert any(np.max(np.unique(r[np.isin(r, pieces.heads)], return_counts=True)[1]) >= 2 for r in out)
    again = invent_names(windows, np.random.default_rng(2), 0.08, pieces)
    assert np.array_equal(out, again)  # a pure function of the rng: resumes draw the same windows
    assert np.array_equal(invent_names(windows, np.random.default_rng(2), 0.0, pieces), windows)
    with pytest.raises(ValueError, match="rate"):
        invent_names(windows, np.random.default_rng(2), 1.0, pieces)


def test_training_with_invented_names_resumes_exactly(tok, tmp_path):
    """ae_invent > 0 changes the auto-encoding windows (another loss than without it) and keeps exact resume."""
    data = write_corpus(tmp_path / "c")
    kw = dict(max_steps=8, ae_fraction=1.0, ae_invent=0.2)
    full = Trainer(small_config(data, tmp_path / "full", **kw), llm=tiny_llm(len(tok)), tokenizer=tok)
    full.train()
    first = Trainer(small_config(data, tmp_path / "split", stop_at_step=3, **kw), llm=tiny_llm(len(tok)), tokenizer=tok)
    first.train()
    second = Trainer(small_config(data, tmp_path / "split", **kw), llm=tiny_llm(len(tok)), tokenizer=tok)
    second.train()
    for (name, a), b in zip(full.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    plain = Trainer(
        small_config(data, tmp_path / "plain", max_steps=8, ae_fraction=1.0), llm=tiny_llm(len(tok)), tokenizer=tok
    )
    plain.train()
    losses = [json.loads(x)["loss"] for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    plain_losses = [json.loads(x)["loss"] for x in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    assert losses != plain_losses
    with pytest.raises(ValueError, match="ae_invent"):
        small_config(data, tmp_path / "bad", ae_invent=1.0)
