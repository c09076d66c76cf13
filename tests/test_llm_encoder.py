"""The ICAE-style LLM encoder (issue 14, arm d): the LLM with its own LoRA adapter reads each window and memory
tokens. On tiny random models."""

from __future__ import annotations

import pytest
import torch
from test_reader import DOC_A, DOC_B, QUESTION, _perturb, _records
from test_training import small_config, write_corpus

from icformer_rag import ContextCompressor, SoftPromptLM, reader
from icformer_rag.generation import GenerationSettings
from icformer_rag.llm_encoder import LLMEncoder
from icformer_rag.testing import TINY_COMPRESSOR, make_tiny_llm
from icformer_rag.training.trainer import Trainer

SHAPE = {k: v for k, v in TINY_COMPRESSOR.items() if k != "num_blocks"}


def _llm_compressor(tokenizer, seed: int = 0):
    llm = make_tiny_llm(len(tokenizer))
    comp = ContextCompressor.from_llm(llm, tokenizer, seed=seed, encoder="llm", encoder_rank=4, **SHAPE)
    _perturb(list(comp.model.lora), seed)  # a trained adapter, not the identity
    comp.refresh_fingerprint()
    return llm, comp


def test_digests_of_a_window_do_not_depend_on_padding_or_on_later_digests(tokenizer):
    llm, comp = _llm_compressor(tokenizer)
    assert isinstance(comp.model, LLMEncoder) and len(comp.model.lora) > 0
    ids = [comp.tokenize([DOC_A])[0][:20], comp.tokenize([DOC_B])[0][:32]]
    alone = [comp.compress_windows([w])[0] for w in ids]
    batched = comp.compress_windows(ids)  # the first window is right-padded by 12 tokens
    for a, b in zip(alone, batched, strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    assert alone[0].shape[0] == 5  # ceil(20 / 4)
    embeds = comp.embed_tokens(torch.tensor([ids[1]]))
    few, many = comp.model(embeds, None, num_digests=3), comp.model(embeds, None, num_digests=8)
    assert torch.allclose(few, many[:, :3], atol=1e-5)
    assert not torch.allclose(many[:, 3], many[:, 4])


def test_the_encoder_adapter_is_on_only_while_it_compresses(tokenizer):
    llm, comp = _llm_compressor(tokenizer)
    ids = torch.tensor([comp.tokenize([DOC_A])[0]])
    plain = llm(ids).logits
    comp.compress([DOC_A])
    assert reader.active_adapter(llm) is None
    assert torch.equal(llm(ids).logits, plain)  # the LLM itself is unchanged
    # Inside a reader's scope (training, or generation) the encoder switches itself on and the reader back on after.
    _perturb(reader.add_reader(llm, reader.ReaderConfig(r=4, alpha=8)))
    reader.set_enabled(llm, True)
    comp.compress([DOC_B])
    assert reader.active_adapter(llm) == reader.READER


def test_llm_encoder_checkpoint_round_trips(tokenizer, tmp_path):
    llm, comp = _llm_compressor(tokenizer)
    path = comp.save_pretrained(tmp_path / "ckpt")
    lm = SoftPromptLM(llm, tokenizer, comp)
    settings = GenerationSettings(max_new_tokens=6)
    want = comp.compress([DOC_A])[0].embeddings
    answer = lm.generate(QUESTION, comp.compress([DOC_A]), settings)

    fresh = make_tiny_llm(len(tokenizer))
    loaded = ContextCompressor.from_pretrained(path, fresh, tokenizer)
    assert loaded.config.encoder == "llm" and loaded.fingerprint == comp.fingerprint
    assert loaded.fingerprint == loaded.compute_fingerprint()  # the adapter's weights are part of it
    assert torch.allclose(loaded.compress([DOC_A])[0].embeddings, want, atol=1e-5)
    assert SoftPromptLM(fresh, tokenizer, loaded).generate(QUESTION, loaded.compress([DOC_A]), settings) == answer
    # The same checkpoint twice shares one adapter; another checkpoint's encoder sits beside it.
    again = ContextCompressor.from_pretrained(path, fresh, tokenizer)
    assert again.model.adapter_name == loaded.model.adapter_name
    _, other = _llm_compressor(tokenizer, seed=3)
    second = ContextCompressor.from_pretrained(other.save_pretrained(tmp_path / "other"), fresh, tokenizer)
    assert second.model.adapter_name != loaded.model.adapter_name
    assert not torch.allclose(second.compress([DOC_A])[0].embeddings, want)
    assert torch.allclose(loaded.compress([DOC_A])[0].embeddings, want, atol=1e-5)
    with pytest.raises(ValueError, match="IC-Former"):
        loaded.compile()


def test_training_an_llm_encoder_with_a_reader_resumes_exactly_and_ships_it(tokenizer, tmp_path):
    data = write_corpus(tmp_path / "c")
    kw = dict(encoder="llm", encoder_rank=4, reader_rank=4, reader_lr=1e-2, instruct_fraction=0.5, ae_fraction=0.3)
    kw["instruct_file"] = str(_records(tmp_path / "cf.jsonl"))
    full = Trainer(small_config(data, tmp_path / "full", max_steps=8, **kw), make_tiny_llm(len(tokenizer)), tokenizer)
    lora_before = [p.detach().clone() for p in full.model.lora]
    full.train()
    assert any(not torch.equal(a, b) for a, b in zip(lora_before, full.model.lora, strict=True))  # the encoder trained
    assert reader.active_adapter(full.llm) == reader.READER
    first = Trainer(
        small_config(data, tmp_path / "split", max_steps=8, stop_at_step=3, **kw),
        make_tiny_llm(len(tokenizer)),
        tokenizer,
    )
    first.train()
    second = Trainer(
        small_config(data, tmp_path / "split", max_steps=8, **kw), make_tiny_llm(len(tokenizer)), tokenizer
    )
    assert second.step == 3
    second.train()
    for a, b in zip(full.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(full.reader_params, second.reader_params, strict=True):
        assert torch.equal(a, b)
    release = tmp_path / "full" / "release"
    fresh = make_tiny_llm(len(tokenizer))
    loaded = ContextCompressor.from_pretrained(release, fresh, tokenizer)
    assert loaded.has_reader and loaded.config.encoder == "llm"
    full.compressor.model.to(torch.bfloat16)  # the release is bf16: compare like with like
    got = loaded.compress([DOC_A])[0].embeddings.float()
    want = full.compressor.compress([DOC_A])[0].embeddings.float()
    assert torch.allclose(got, want, atol=5e-2)


def test_an_llm_encoder_can_start_from_a_trained_reader(tokenizer, tmp_path):
    """--reader-from: a new encoder reads through a reader trained elsewhere (run 10's, say), continued."""
    llm = make_tiny_llm(len(tokenizer))
    _perturb(reader.add_reader(llm, reader.ReaderConfig(r=4, alpha=8)))
    saved = reader.save_reader(llm, tmp_path / "reader")
    data = write_corpus(tmp_path / "c")
    kw = dict(encoder="llm", encoder_rank=4, reader_rank=4, instruct_fraction=0.5, ae_fraction=0.3)
    kw["instruct_file"] = str(_records(tmp_path / "cf.jsonl"))
    trainer = Trainer(
        small_config(data, tmp_path / "run", max_steps=2, reader_from=str(saved), **kw),
        make_tiny_llm(len(tokenizer)),
        tokenizer,
    )
    for a, b in zip(reader.adapter_parameters(llm), trainer.reader_params, strict=True):
        assert torch.equal(a, b)
    assert all(p.requires_grad for p in trainer.reader_params) and reader.active_adapter(trainer.llm) == reader.READER
    trainer.train()
    with pytest.raises(FileNotFoundError, match="reader_from"):
        Trainer(
            small_config(data, tmp_path / "bad", reader_from=str(tmp_path), **kw),
            make_tiny_llm(len(tokenizer)),
            tokenizer,
        )
