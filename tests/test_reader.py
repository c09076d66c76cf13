"""The reader adapter (LoRA on the LLM, on only while it reads digests), multi-document instruction records,
the full-text reader baseline and context layers: on tiny random models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_training import small_config, write_corpus

from icformer_rag import ContextCompressor, SoftPromptLM, reader
from icformer_rag.generation import GenerationSettings
from icformer_rag.testing import TINY_COMPRESSOR, make_tiny_llm
from icformer_rag.training.objectives import instruct_loss, target_loss, tokenize_instruct
from icformer_rag.training.trainer import Trainer

QUESTION = "Who founded Velmora?"
DOC_A = "Velmora was founded in 1723 by Ada Krenn, a glassmaker from the north."
DOC_B = "The river Osk is 40 km long and freezes in January."


def _perturb(params: list[torch.nn.Parameter], seed: int = 0) -> None:
    """A fresh adapter is the identity (LoRA B = 0); give it weights so that it changes outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * 0.2)


def _lm_with_reader(tokenizer, seed: int = 0):
    llm = make_tiny_llm(len(tokenizer))
    comp = ContextCompressor.from_llm(llm, tokenizer, seed=seed, **TINY_COMPRESSOR)
    _perturb(reader.add_reader(llm, reader.ReaderConfig(r=4, alpha=8)), seed)
    comp.reader_name = reader.READER
    return llm, comp, SoftPromptLM(llm, tokenizer, comp)


def test_adapter_starts_as_identity_and_is_off_by_default(tokenizer):
    llm = make_tiny_llm(len(tokenizer))
    ids = torch.randint(0, len(tokenizer), (1, 12))
    base = llm(ids).logits
    params = reader.add_reader(llm, reader.ReaderConfig(r=4))
    assert params and all(p.requires_grad for p in params)
    assert not any(p.requires_grad for n, p in llm.named_parameters() if "lora_" not in n)
    with reader.adapter_scope(llm, reader.READER):
        assert torch.equal(llm(ids).logits, base)  # LoRA B starts at zero
    _perturb(params)
    assert torch.equal(llm(ids).logits, base)  # off outside a scope
    with reader.adapter_scope(llm, reader.READER):
        assert not torch.allclose(llm(ids).logits, base)
    assert not reader.is_enabled(llm)
    with pytest.raises(ValueError, match="already holds"):
        reader.add_reader(llm)


def test_saved_adapter_is_peft_format_and_round_trips(tokenizer, tmp_path):
    from peft import PeftModel

    llm = make_tiny_llm(len(tokenizer))
    _perturb(reader.add_reader(llm, reader.ReaderConfig(r=4)))
    ids = torch.randint(0, len(tokenizer), (1, 12))
    with reader.adapter_scope(llm, reader.READER):
        want = llm(ids).logits
    path = reader.save_reader(llm, tmp_path / "adapter")
    assert sorted(p.name for p in path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    again = make_tiny_llm(len(tokenizer))
    reader.load_reader(again, path)
    with reader.adapter_scope(again, reader.READER):
        assert torch.allclose(again(ids).logits, want, atol=1e-6)
    assert not any(p.requires_grad for p in again.parameters())
    # Anyone with peft can load it as a PeftModel.
    peft_model = PeftModel.from_pretrained(make_tiny_llm(len(tokenizer)), str(path))
    assert torch.allclose(peft_model(ids).logits, want, atol=1e-6)
    with pytest.raises(FileNotFoundError):
        reader.load_reader(make_tiny_llm(len(tokenizer)), tmp_path / "nothing")


def test_full_text_prompts_never_use_the_reader(tokenizer):
    llm, comp, lm = _lm_with_reader(tokenizer)
    plain = SoftPromptLM(llm, tokenizer, ContextCompressor.from_llm(llm, tokenizer, **TINY_COMPRESSOR))
    settings = GenerationSettings(max_new_tokens=8)
    # Text contexts: exactly the LLM's own answer (the other compressor has no reader: the adapter stays off).
    assert lm.generate_batch([QUESTION], [[DOC_A]], settings) == plain.generate_batch([QUESTION], [[DOC_A]], settings)
    digests = comp.compress([DOC_A])
    embeds, mask = lm._batch([QUESTION], [digests], settings)
    with torch.no_grad():
        off = llm(inputs_embeds=embeds, attention_mask=mask).logits[:, -1]
        with reader.adapter_scope(llm, reader.READER):
            on = llm(inputs_embeds=embeds, attention_mask=mask).logits[:, -1]
    assert not torch.allclose(on, off)
    # A mixed batch answers each row as it would alone (one generate call per reader setting).
    mixed = lm.generate_batch([QUESTION, QUESTION], [[DOC_A], digests], settings)
    assert mixed == [lm.generate(QUESTION, [DOC_A], settings), lm.generate(QUESTION, digests, settings)]
    assert "".join(lm.stream(QUESTION, digests, settings)).strip() == mixed[1]


def test_checkpoint_with_reader_loads_it(tokenizer, tmp_path):
    llm, comp, lm = _lm_with_reader(tokenizer)
    path = comp.save_pretrained(tmp_path / "ckpt")
    reader.save_reader(llm, path / reader.ADAPTER_DIR)
    settings = GenerationSettings(max_new_tokens=8)
    want = lm.generate(QUESTION, comp.compress([DOC_A]), settings)

    fresh = make_tiny_llm(len(tokenizer))
    loaded = ContextCompressor.from_pretrained(path, fresh, tokenizer)
    assert loaded.has_reader
    got = SoftPromptLM(fresh, tokenizer, loaded).generate(QUESTION, loaded.compress([DOC_A]), settings)
    assert got == want
    # The same checkpoint again reuses the adapter; another checkpoint's reader sits beside it, each compressor's
    # digests read through its own.
    assert ContextCompressor.from_pretrained(path, fresh, tokenizer).reader_name == loaded.reader_name
    other_llm, other, _ = _lm_with_reader(tokenizer, seed=7)
    other_path = other.save_pretrained(tmp_path / "other")
    reader.save_reader(other_llm, other_path / reader.ADAPTER_DIR)
    other_want = SoftPromptLM(other_llm, tokenizer, other).generate(QUESTION, other.compress([DOC_A]), settings)
    second = ContextCompressor.from_pretrained(other_path, fresh, tokenizer)
    assert second.reader_name != loaded.reader_name
    lm2 = SoftPromptLM(fresh, tokenizer, second)
    assert lm2.generate(QUESTION, second.compress([DOC_A]), settings) == other_want
    assert SoftPromptLM(fresh, tokenizer, loaded).generate(QUESTION, loaded.compress([DOC_A]), settings) == want


def test_multi_document_training_layout_is_the_inference_prompt(tokenizer):
    """Training on a two-document record scores the answer on exactly the prompt SoftPromptLM builds."""
    llm, comp, lm = _lm_with_reader(tokenizer)
    ex = tokenize_instruct(tokenizer, [DOC_A, DOC_B * 3], QUESTION, "Ada Krenn", comp.config.window_tokens)
    assert ex.pieces.count(0) == 1 and ex.pieces.count(1) == 1 and len(ex.contexts_ids) == 2
    with reader.adapter_scope(llm, reader.READER):
        train, infer = _training_and_inference_losses(lm, ex, [DOC_A, DOC_B * 3])
    assert torch.allclose(train, infer, atol=1e-5), (train, infer)


@torch.no_grad()
def _training_and_inference_losses(lm: SoftPromptLM, ex, docs: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The answer's loss as instruct_loss builds the training row, and on SoftPromptLM's inference prompt for the
    same question and documents followed by the answer: equal when the two layouts are the same position for
    position."""
    llm, comp = lm.llm, lm.compressor
    train = instruct_loss(comp.model, llm, [ex]).loss
    prompt = lm.build_inputs(QUESTION, comp.compress(docs))
    answer = torch.tensor(ex.answer_ids)
    inputs = torch.cat((prompt, llm.get_input_embeddings()(answer[:-1])))[None]
    targets = torch.full(inputs.shape[:2], -100)
    targets[0, -len(answer) :] = answer
    return train, target_loss(llm, inputs, targets).loss


def _records(path: Path) -> Path:
    rows = [
        {"contexts": [DOC_A, DOC_B], "prompt": QUESTION, "answer": "Ada Krenn"},
        {"contexts": [DOC_B], "prompt": "How long is the Osk?", "answer": "40 km"},
        {"context": DOC_A, "prompt": "When was Velmora founded?", "answer": "1723"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_training_with_a_reader_resumes_exactly_and_ships_it(tokenizer, tmp_path):
    data = write_corpus(tmp_path / "c")
    kw = dict(reader_rank=4, reader_lr=1e-2, instruct_fraction=0.5, ae_fraction=0.3)
    kw["instruct_file"] = str(_records(tmp_path / "cf.jsonl"))
    full = Trainer(small_config(data, tmp_path / "full", max_steps=10, **kw), make_tiny_llm(len(tokenizer)), tokenizer)
    full.train()
    first = Trainer(
        small_config(data, tmp_path / "split", max_steps=10, stop_at_step=4, **kw),
        make_tiny_llm(len(tokenizer)),
        tokenizer,
    )
    first.train()
    second = Trainer(
        small_config(data, tmp_path / "split", max_steps=10, **kw), make_tiny_llm(len(tokenizer)), tokenizer
    )
    assert second.step == 4
    second.train()
    for a, b in zip(full.reader_params, second.reader_params, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(full.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert any(p.abs().sum() > 0 for n, p in full.llm.named_parameters() if "lora_B" in n)  # it trained
    release = tmp_path / "full" / "release"
    assert (release / reader.ADAPTER_DIR / "adapter_model.safetensors").is_file()
    # Loading the release applies the adapter; continuing from it keeps training the same adapter.
    fresh = make_tiny_llm(len(tokenizer))
    assert ContextCompressor.from_pretrained(release, fresh, tokenizer).has_reader
    more = Trainer(
        small_config(data, tmp_path / "more", max_steps=12, init_from=str(release), **kw),
        make_tiny_llm(len(tokenizer)),
        tokenizer,
    )
    assert more.step == 10 and more.compressor.has_reader
    for a, b in zip(reader.adapter_parameters(full.llm), more.reader_params, strict=True):
        assert torch.allclose(a.float(), b, atol=1e-2)  # the release is bf16


def test_full_text_reader_baseline_trains_only_the_adapter(tokenizer, tmp_path):
    data = write_corpus(tmp_path / "c")
    cfg = small_config(
        data,
        tmp_path / "text",
        max_steps=6,
        reader_rank=4,
        reader_lr=1e-2,
        instruct_fraction=1.0,
        ae_fraction=0.0,
        instruct_context="text",
        instruct_file=str(_records(tmp_path / "cf.jsonl")),
    )
    trainer = Trainer(cfg, make_tiny_llm(len(tokenizer)), tokenizer)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(before[k], v), k
    release = tmp_path / "text" / "release"
    assert (release / "text_reader_adapter" / "adapter_model.safetensors").is_file()
    assert not (release / reader.ADAPTER_DIR).exists()  # never mistaken for a digest reader
    assert any(p.abs().sum() > 0 for n, p in trainer.llm.named_parameters() if "lora_B" in n)
    with pytest.raises(ValueError, match="full-text reader"):
        small_config(
            data, tmp_path / "x", instruct_context="text", reader_rank=4, instruct_fraction=0.5, instruct_file="x"
        )


def test_context_layers_extend_a_checkpoint_unchanged(tokenizer, tmp_path):
    llm = make_tiny_llm(len(tokenizer))
    comp = ContextCompressor.from_llm(llm, tokenizer, **TINY_COMPRESSOR)
    path = comp.save_pretrained(tmp_path / "ckpt")
    extended = ContextCompressor.from_pretrained(path, llm, tokenizer, context_layers=2)
    assert extended.config.context_layers == 2 and len(extended.model.context_layers) == 2
    assert extended.fingerprint != comp.fingerprint
    a, b = comp.compress([DOC_A * 3]), extended.compress([DOC_A * 3])
    assert torch.allclose(a[0].embeddings, b[0].embeddings, atol=1e-6)  # zero-initialised: the same digests
    with pytest.raises(ValueError, match="cannot drop"):
        ContextCompressor.from_pretrained(extended.save_pretrained(tmp_path / "ext"), llm, tokenizer, context_layers=1)
    # Trained, they change the digests; padding does not leak into real tokens.
    with torch.no_grad():
        for p in extended.model.context_layers.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    alone = extended.compress([DOC_B])[0].embeddings
    batched = extended.compress([DOC_B, DOC_A * 3])[0].embeddings
    assert torch.allclose(alone, batched, atol=1e-5)


def test_a_users_own_adapter_stays_on_for_full_text(tokenizer, tmp_path):
    """A PEFT model the user tuned for text keeps its adapter on prompts without digests (a regression: the
    full-text reader baseline was read with its adapter switched off)."""
    from peft import PeftModel

    trained = make_tiny_llm(len(tokenizer))
    _perturb(reader.add_reader(trained, reader.ReaderConfig(r=4), name="mine"))
    path = reader.save_reader(trained, tmp_path / "mine", name="mine")
    user = PeftModel.from_pretrained(make_tiny_llm(len(tokenizer)), str(path)).eval()
    settings = GenerationSettings(max_new_tokens=8)
    lm = SoftPromptLM(user, tokenizer)
    embeds, mask = lm._batch([QUESTION], [[DOC_A]], settings)
    with torch.no_grad():
        tuned = user(inputs_embeds=embeds, attention_mask=mask).logits
        with reader.adapter_scope(user, None):  # no reader asked for: the user's adapter stays on
            assert torch.equal(user(inputs_embeds=embeds, attention_mask=mask).logits, tuned)
        base = make_tiny_llm(len(tokenizer))(inputs_embeds=embeds, attention_mask=mask).logits
    assert not torch.allclose(tuned, base)
    plain = SoftPromptLM(make_tiny_llm(len(tokenizer)), tokenizer).generate(QUESTION, [DOC_A], settings)
    assert lm.generate(QUESTION, [DOC_A], settings) != plain
    assert reader.active_adapter(user) == "default"


LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)


@pytest.fixture
def llama3_tokenizer(tokenizer):
    """The SmolLM2 tokenizer with a Llama-3-style chat template and its special tokens."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    tok.chat_template = LLAMA3_TEMPLATE
    return tok


def test_end_of_turn_is_read_from_the_chat_template(tokenizer, llama3_tokenizer):
    import copy

    from icformer_rag.prompt import end_of_turn

    assert end_of_turn(tokenizer) == "<|im_end|>"  # SmolLM2's ChatML
    assert end_of_turn(llama3_tokenizer) == "<|eot_id|>"
    mistral = copy.deepcopy(tokenizer)
    mistral.chat_template = MISTRAL_TEMPLATE
    assert end_of_turn(mistral) == mistral.eos_token
    ex = tokenize_instruct(llama3_tokenizer, DOC_A, QUESTION, "Ada Krenn", 32)
    assert llama3_tokenizer.decode(ex.answer_ids) == "Ada Krenn<|eot_id|>"
    eot = llama3_tokenizer.convert_tokens_to_ids("<|eot_id|>")
    lm = SoftPromptLM(make_tiny_llm(len(llama3_tokenizer)), llama3_tokenizer)
    assert eot in lm.eos_token_ids  # generation stops where training taught the answer to end


def test_training_layout_is_the_inference_prompt_for_a_llama3_template(llama3_tokenizer):
    """The same check as for SmolLM2's template, with another chat template: position for position."""
    tok = llama3_tokenizer
    llm = make_tiny_llm(len(tok))
    comp = ContextCompressor.from_llm(llm, tok, **TINY_COMPRESSOR)
    lm = SoftPromptLM(llm, tok, comp)
    ex = tokenize_instruct(tok, [DOC_B, DOC_A * 2], QUESTION, "Ada Krenn", comp.config.window_tokens)
    train, infer = _training_and_inference_losses(lm, ex, [DOC_B, DOC_A * 2])
    assert torch.allclose(train, infer, atol=1e-5), (train, infer)


def test_kl_teacher_reads_the_full_text_through_its_own_adapter_and_never_ships(tokenizer, tmp_path):
    """kl_teacher: the KL's teacher reads the full text through a tuned full-text reader adapter (not the frozen
    LLM, not the digest reader); that adapter stays frozen and unchanged, and the release holds only the reader."""
    from icformer_rag.training.objectives import teacher_logits

    teacher_llm = make_tiny_llm(len(tokenizer))
    _perturb(reader.add_reader(teacher_llm, reader.ReaderConfig(r=4, alpha=8), name="mine"), seed=3)
    adapter = reader.save_reader(teacher_llm, tmp_path / "text_reader", name="mine")
    data = write_corpus(tmp_path / "c")
    kw = dict(reader_rank=4, reader_lr=1e-2, instruct_fraction=1.0, ae_fraction=0.0, kl_weight=1.0)
    kw["instruct_file"] = str(_records(tmp_path / "cf.jsonl"))
    cfg = small_config(data, tmp_path / "run", max_steps=4, kl_teacher=str(adapter), **kw)
    trainer = Trainer(cfg, make_tiny_llm(len(tokenizer)), tokenizer)
    before = [p.detach().clone() for p in reader.adapter_parameters(trainer.llm, reader.TEACHER)]
    assert before and not any(p.requires_grad for p in reader.adapter_parameters(trainer.llm, reader.TEACHER))
    assert reader.active_adapter(trainer.llm) == reader.READER  # the digest reader trains, the teacher is off

    # The teacher's logits are those of an LLM whose only adapter is the text reader, reading the full text.
    examples = trainer.instruct[:3]
    with reader.adapter_scope(teacher_llm, "mine"):
        expected = teacher_logits(teacher_llm, examples, "mine")
    got = teacher_logits(trainer.llm, examples, reader.TEACHER)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, teacher_logits(trainer.llm, examples))  # not the frozen LLM's own reading
    assert reader.active_adapter(trainer.llm) == reader.READER  # the scope put the digest reader back

    trainer.train()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(x["kl"] > 0 for x in lines)
    for a, b in zip(before, reader.adapter_parameters(trainer.llm, reader.TEACHER), strict=True):
        assert torch.equal(a, b)
    from safetensors.torch import load_file

    shipped = load_file(tmp_path / "run" / "release" / reader.ADAPTER_DIR / reader.ADAPTER_WEIGHTS)
    assert len(shipped) == len(trainer.reader_params) and not any("teacher" in k for k in shipped)
    with pytest.raises(ValueError, match="kl_teacher needs kl_weight"):
        small_config(data, tmp_path / "bad", kl_teacher=str(adapter))


def test_kl_teacher_with_compiled_llm_trains_like_eager(tokenizer, tmp_path):
    """The teacher switches adapters inside every instruction step (digest reader -> text reader -> back): through
    compiled decoder blocks that gives eager's losses and KL, step by step."""
    teacher_llm = make_tiny_llm(len(tokenizer))
    _perturb(reader.add_reader(teacher_llm, reader.ReaderConfig(r=4, alpha=8), name="mine"), seed=3)
    adapter = reader.save_reader(teacher_llm, tmp_path / "text_reader", name="mine")
    data = write_corpus(tmp_path / "c")
    kw = dict(reader_rank=4, reader_lr=1e-2, instruct_fraction=0.6, ae_fraction=0.4, kl_weight=1.0, log_every=1)
    kw["instruct_file"] = str(_records(tmp_path / "cf.jsonl"))
    runs = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        cfg = small_config(
            data, tmp_path / str(compiled), max_steps=5, kl_teacher=str(adapter), compile_llm=compiled, **kw
        )
        Trainer(cfg, make_tiny_llm(len(tokenizer)), tokenizer).train()
        runs[compiled] = [json.loads(x) for x in (tmp_path / str(compiled) / "metrics.jsonl").read_text().splitlines()]
    assert any("kl" in x for x in runs[False])
    for key in ("loss", "kl"):
        want = [x.get(key) for x in runs[False]]
        got = [x.get(key) for x in runs[True]]
        assert [g is None for g in got] == [w is None for w in want]
        assert [g for g in got if g is not None] == pytest.approx([w for w in want if w is not None], rel=1e-4)
