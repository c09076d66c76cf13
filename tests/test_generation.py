"""Soft-prompt generation on the tiny random Llama with the real SmolLM2 tokenizer and chat template."""

from __future__ import annotations

import warnings

import pytest
import torch

from icformer_rag import ContextCompressor, GenerationSettings, ICFormer, SoftPromptLM
from icformer_rag.generation import DEFAULT_INSTRUCTION, render_prompt

TEXT_A = "The town of Velmora was founded in 1723 by Ada Krenn, a glassmaker."
TEXT_B = "Glass is made from sand, soda and lime. " * 6
SHORT = GenerationSettings(max_new_tokens=8)


def token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0


def chat_text(tokenizer, user: str) -> str:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False
    )


# --------------------------------------------------------------------------------------------- prompts
def test_render_prompt_places_markers_in_order_inside_the_chat_template(tokenizer):
    pieces = render_prompt(tokenizer, "Who founded Velmora?", 3, instruction="Read this.")
    assert [p for p in pieces if isinstance(p, int)] == [0, 1, 2]
    assert all(isinstance(p, str) for p in pieces[::2]) and len(pieces) == 7
    text = "".join(p if isinstance(p, str) else f"<<ICFORMER_CONTEXT_{p}>>" for p in pieces)
    user = (
        "Read this.\n\n<<ICFORMER_CONTEXT_0>>\n<<ICFORMER_CONTEXT_1>>\n<<ICFORMER_CONTEXT_2>>\n\n"
        "Question: Who founded Velmora?"
    )
    assert text == chat_text(tokenizer, user)
    assert pieces[0].startswith("<|im_start|>") and pieces[0].endswith("Read this.\n\n")
    assert pieces[-1].startswith("\n\nQuestion: Who founded Velmora?<|im_end|>")
    assert pieces[-1].endswith("<|im_start|>assistant\n")


def test_render_prompt_without_contexts_or_question(tokenizer):
    pieces = render_prompt(tokenizer, "  ", 0)
    assert pieces == [chat_text(tokenizer, DEFAULT_INSTRUCTION)]


def test_render_prompt_with_system_prompt(tokenizer):
    pieces = render_prompt(tokenizer, "Q?", 1, system="Be brief.")
    assert pieces[0].startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert "SmolLM" not in pieces[0]  # the template's default system prompt is replaced


def test_render_prompt_keeps_a_typed_slot_marker_as_text(tokenizer):
    """A context-slot marker typed by the user (old syntax or new) is text, never a slot: only render_prompt's own
    slots (one here) are cut out."""
    for typed in ("what is <<ICFORMER_CONTEXT_3>>?", "what is \u27e6icf:ctx0.0123456789abcdef\u27e7?"):
        pieces = render_prompt(tokenizer, typed, 1, instruction=f"see {typed}")
        assert [p for p in pieces if isinstance(p, int)] == [0]
        assert typed in "".join(p for p in pieces if isinstance(p, str))


def test_build_inputs_with_a_digest(soft_lm, compressor, tokenizer):
    digest = compressor.compress([TEXT_B])[0]
    embeds = soft_lm.build_inputs("What is glass made of?", [digest])
    pieces = render_prompt(tokenizer, "What is glass made of?", 1)
    before, after = token_count(tokenizer, pieces[0]), token_count(tokenizer, pieces[2])
    assert embeds.shape == (before + len(digest) + 2 + after, 64)
    special = compressor.model.special_embeddings
    slot = embeds[before : before + len(digest) + 2]
    assert torch.equal(slot[0], special[ICFormer.SPECIAL_BEGIN])
    assert torch.equal(slot[1:-1], digest.embeddings)
    assert torch.equal(slot[-1], special[ICFormer.SPECIAL_END])
    ids = tokenizer(pieces[0], add_special_tokens=False)["input_ids"]
    assert torch.equal(embeds[:before], soft_lm.llm.get_input_embeddings()(torch.tensor(ids)))


def test_build_inputs_mixes_digests_and_texts(soft_lm, compressor, tokenizer):
    digest = compressor.compress([TEXT_A])[0]
    embeds = soft_lm.build_inputs("Q?", [digest, TEXT_B])
    pieces = render_prompt(tokenizer, "Q?", 2)
    text_tokens = sum(token_count(tokenizer, p) for p in pieces if isinstance(p, str))
    assert embeds.shape[0] == text_tokens + len(digest) + 2 + token_count(tokenizer, TEXT_B)


def test_full_text_path_embeds_the_whole_prompt_tokenized_at_once(soft_lm, tokenizer, tiny_llm):
    question = "Who founded Velmora?"
    embeds = soft_lm.build_inputs(question, [TEXT_A, TEXT_B])
    text = chat_text(tokenizer, f"{DEFAULT_INSTRUCTION}\n\n{TEXT_A}\n{TEXT_B}\n\nQuestion: {question}")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert torch.equal(embeds, tiny_llm.get_input_embeddings()(torch.tensor(ids)))
    # A single string is one context, not a list of characters.
    assert torch.equal(soft_lm.build_inputs(question, TEXT_A), soft_lm.build_inputs(question, [TEXT_A]))


def test_digest_from_another_compressor_raises(soft_lm, tiny_llm, tokenizer, compressor_kwargs):
    other = ContextCompressor.from_llm(tiny_llm, tokenizer, seed=7, **compressor_kwargs)
    foreign = other.compress([TEXT_A])[0]
    with pytest.raises(ValueError, match="recompress"):
        soft_lm.build_inputs("Q?", [foreign])
    with pytest.raises(ValueError, match="recompress"):
        soft_lm.generate("Q?", [foreign], SHORT)


def test_digests_without_a_compressor_raise(tiny_llm, tokenizer, compressor):
    plain = SoftPromptLM(tiny_llm, tokenizer)
    digest = compressor.compress([TEXT_A])[0]
    with pytest.raises(ValueError, match="no compressor"):
        plain.generate("Q?", [digest], SHORT)
    with pytest.raises(ValueError, match="needs a compressor"):
        plain.answer("Q?", [TEXT_A], settings=SHORT)
    assert isinstance(plain.generate("Q?", [TEXT_A], SHORT), str)  # full text needs none


def test_bad_question_and_context_types(soft_lm):
    with pytest.raises(TypeError, match="question"):
        soft_lm.build_inputs(42, [TEXT_A])
    with pytest.raises(TypeError, match="context 1"):
        soft_lm.build_inputs("Q?", [TEXT_A, 3.5])
    with pytest.raises(TypeError, match="list of questions"):
        soft_lm.generate_batch("Q?", [[TEXT_A]], SHORT)
    with pytest.raises(ValueError, match="context lists"):
        soft_lm.generate_batch(["Q1?", "Q2?"], [[TEXT_A]], SHORT)
    with pytest.raises(TypeError, match="contexts must be a text, a Digest or a list"):
        soft_lm.generate("Q?", 42, SHORT)
    # None is no context at all, as an empty list is; a single text is a one-item list.
    assert soft_lm.generate("Q?", None, SHORT) == soft_lm.generate("Q?", [], SHORT)
    assert soft_lm.generate("Q?", TEXT_A, SHORT) == soft_lm.generate("Q?", [TEXT_A], SHORT)


def test_generation_settings_validate():
    with pytest.raises(ValueError):
        GenerationSettings(max_new_tokens=0)
    with pytest.raises(ValueError):
        GenerationSettings(temperature=0.0)
    assert GenerationSettings().kwargs() == {"max_new_tokens": 256, "do_sample": False, "repetition_penalty": 1.0}
    with pytest.raises(ValueError, match="repetition_penalty"):
        GenerationSettings(repetition_penalty=0.0)
    with pytest.raises(ValueError, match="top_p"):
        GenerationSettings(top_p=1.5)
    (processor,) = GenerationSettings(repetition_penalty=1.2).kwargs()["logits_processor"]
    assert processor.penalty == 1.2
    # The chat APIs' convention: temperature 0 is greedy, above 0 samples at it.
    assert GenerationSettings.from_temperature(8) == GenerationSettings(max_new_tokens=8)
    sampled = GenerationSettings.from_temperature(8, 0.7, 0.9, 1.1)
    assert sampled == GenerationSettings(8, do_sample=True, temperature=0.7, top_p=0.9, repetition_penalty=1.1)
    with pytest.raises(ValueError, match="temperature"):
        GenerationSettings.from_temperature(8, -0.1)


def test_repetition_penalty_stops_the_answer_repeating_itself(soft_lm, compressor, monkeypatch):
    """Greedy decoding of the tiny random LLM repeats tokens; a penalty on the answer's own tokens (the prompt
    is embeddings, so only they count) repeats far fewer, and a batch of left-padded prompts gives each answer
    what it gets alone (transformers' own `repetition_penalty` skipped a padded row's first answer tokens),
    streams included."""
    generated = []
    plain_generate = soft_lm.llm.generate

    def recording_generate(*args, **kwargs):
        out = plain_generate(*args, **kwargs)
        generated.extend(out.tolist())
        return out

    def repeats() -> int:
        eos = set(soft_lm.eos_token_ids) | {soft_lm.pad_token_id}
        rows = [[t for t in row if t not in eos] for row in generated]
        generated.clear()
        return sum(len(row) - len(set(row)) for row in rows)

    monkeypatch.setattr(soft_lm.llm, "generate", recording_generate)
    digest = compressor.compress([TEXT_A])[0]
    questions, contexts = ["Who?", "When?", "Why?"], [[digest], [TEXT_B], [TEXT_A, digest]]
    soft_lm.generate_batch(questions, contexts, GenerationSettings(max_new_tokens=32))
    plain = repeats()
    plain_who = soft_lm.generate("Who?", [digest], SHORT)
    penalised = GenerationSettings(max_new_tokens=32, repetition_penalty=3.0)
    answers = soft_lm.generate_batch(questions, contexts, penalised)
    assert repeats() * 3 <= plain, plain
    assert answers == [soft_lm.generate(q, c, penalised) for q, c in zip(questions, contexts, strict=True)]
    assert "".join(soft_lm.stream("Who?", [digest], penalised)).strip() == answers[0]
    # An LLM whose own generation config asks for a penalty (some instruct models' do) changes nothing:
    # the settings decide, and transformers' processor is never built beside ours.
    monkeypatch.setattr(soft_lm.llm.generation_config, "repetition_penalty", 1.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert soft_lm.generate_batch(questions, contexts, penalised) == answers
        assert soft_lm.generate("Who?", [digest], SHORT) == plain_who


# ------------------------------------------------------------------------------------------ generation
def test_generate_batch_equals_one_by_one(soft_lm, compressor):
    digests = compressor.compress([TEXT_A, TEXT_B])
    questions = ["Who?", "What is glass made of, and who made the first glass in the town?", "Why?", "When?"]
    contexts = [[digests[0]], [digests[1], digests[0]], [TEXT_B], []]
    batched = soft_lm.generate_batch(questions, contexts, SHORT)
    lengths = {soft_lm.build_inputs(q, c).shape[0] for q, c in zip(questions, contexts, strict=True)}
    assert len(lengths) == len(questions)  # all prompt lengths differ: real left padding
    alone = [soft_lm.generate(q, c, SHORT) for q, c in zip(questions, contexts, strict=True)]
    assert batched == alone
    assert all(isinstance(a, str) and a for a in batched)
    assert len(set(batched)) > 1
    assert soft_lm.generate_batch([], [], SHORT) == []


def test_stream_joins_to_generate(soft_lm, compressor):
    digest = compressor.compress([TEXT_A])[0]
    chunks = list(soft_lm.stream("Who founded Velmora?", [digest], SHORT))
    assert len(chunks) > 1 and all(isinstance(c, str) and c for c in chunks)
    # generate() strips surrounding whitespace; the stream gives the raw text.
    assert "".join(chunks).strip() == soft_lm.generate("Who founded Velmora?", [digest], SHORT)


def test_answer_matches_generate(soft_lm, compressor):
    from_digests = soft_lm.answer("Who?", [TEXT_A], settings=SHORT)
    assert from_digests == soft_lm.generate("Who?", compressor.compress([TEXT_A]), SHORT)
    full = soft_lm.answer("Who?", TEXT_A, full_context=True, settings=SHORT)
    assert full == soft_lm.generate("Who?", [TEXT_A], SHORT)


def test_prompt_longer_than_the_llm_raises(soft_lm, compressor, tiny_llm):
    limit = tiny_llm.config.max_position_embeddings
    long_text = "word " * (limit + 10)
    with pytest.raises(ValueError, match="positions"):
        soft_lm.generate("Q?", [long_text], SHORT)
    with pytest.raises(ValueError, match="positions"):
        list(soft_lm.stream("Q?", [long_text], SHORT))
    # Digests are 4x shorter, so 4x the text fits until it does not.
    digest = compressor.compress(["word " * (5 * limit)])[0]
    assert len(digest) > limit
    with pytest.raises(ValueError, match="positions"):
        soft_lm.generate("Q?", [digest], SHORT)
    # The new tokens count too: a prompt that fits alone fails when the answer cannot.
    prompt = soft_lm.build_inputs("Q?", [TEXT_A]).shape[0]
    with pytest.raises(ValueError, match="new tokens"):
        soft_lm.generate("Q?", [TEXT_A], GenerationSettings(max_new_tokens=limit - prompt + 1))
