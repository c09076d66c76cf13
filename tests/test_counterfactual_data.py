"""Counterfactual training records: substitution, question forms, multi-document records, determinism.

Fast: small in-memory documents, the approximate token counter, no LLM and no downloads.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from icformer_rag.data.counterfactual import (
    BUCKETS,
    NUMBER_KINDS,
    CfConfig,
    CfRecord,
    NameGenerator,
    evalset_words,
    make_counterfactual_records,
    parse_length_mix,
    questions_for,
    substitute,
    summary,
    word_case_counts,
    write_cf_records,
)
from icformer_rag.data.instruct import normalize_answer
from icformer_rag.data.sources import Document

TOWN = (
    "The town of Velmora was founded in 1723 by Ada Krenn. Ada Krenn built the old bridge in 1731. "
    "The bridge has 14 arches. In 1790, the composer Tomas Berrick wrote the opera Lindqvist. "
    "Berrick moved to Harlow in 1792. He died on March 4, 1801 in Harlow. "
    "The town had 3,400 inhabitants in 1800. Krenn was born in Ostrava."
)
# Lower-case text so that common words ("the", "bridge") are known as such; names stay capitalised.
COMMON = "the town was founded by the people and the bridge was built and the opera was written in the old days"


def _counts() -> tuple[Counter[str], Counter[str]]:
    return word_case_counts([TOWN, COMMON])


def _substituted(seed: int = 0):
    cap, low = _counts()
    return substitute(TOWN, random.Random(seed), NameGenerator(set(cap) | set(low)), cap, low)


def test_substitution_is_consistent_and_complete() -> None:
    sub = _substituted()
    for original in ["Velmora", "Ada", "Krenn", "Berrick", "Harlow", "Ostrava", "1723", "1731", "14", "3,400", "1800"]:
        assert original in sub.mapping, original
        assert not re.search(rf"(?<![\w,]){re.escape(original)}(?![\w,])", sub.text), f"{original} still in text"
        # every occurrence replaced by the same string
        assert sub.text.count(sub.mapping[original]) >= TOWN.count(original)
    assert len(set(sub.mapping.values())) == len(sub.mapping)  # different originals, different inventions
    # shapes: a year stays a plausible year, a count keeps its digits and separators, a name is capitalised
    assert re.fullmatch(r"1\d{3}|20[0-2]\d", sub.mapping["1723"])
    assert re.fullmatch(r"[1-9],\d{3}", sub.mapping["3,400"])
    assert sub.mapping["Krenn"][0].isupper() and sub.mapping["Krenn"][1:].islower()
    assert "March" not in sub.text  # the date's month and day change too
    assert "The town" in sub.text and "bridge" in sub.text  # ordinary words stay


def test_common_capitalised_words_are_not_names() -> None:
    cap, low = word_case_counts(
        ["The cat sat. the dog ran. Python is a language; python python. In Velmora it rained."]
    )
    sub = substitute("The cat sat in Velmora. Display the dog.", random.Random(0), NameGenerator(), cap, low)
    assert sub.text.startswith("The cat sat in ") and "Velmora" not in sub.text
    assert sub.text.endswith("Display the dog.")  # sentence-initial, never seen mid-sentence: not a name


def test_answers_are_spans_and_do_not_leak() -> None:
    sub = _substituted()
    _, low = _counts()
    qs = questions_for(sub.text, sub.spans, random.Random(1), 3, low)
    assert len(qs) >= 10
    for _kind, q, a in qs:
        assert a in sub.text, (q, a)
        qwords = set(normalize_answer(q).split())
        assert not any(w in qwords for w in normalize_answer(a).split() if len(w) > 1), (q, a)
    kinds = {k for k, _, _ in qs}
    assert {"year", "who", "count", "where", "cloze"} <= kinds


YEAR_WH = ("In what year", "When", "What year", "In which year")


def _questions(sentence: str) -> dict[str, str]:
    """Questions on one hand-made sentence whose facts are marked as substituted: question -> answer."""
    spans = []
    for word in re.finditer(r"\b(?:[A-Z][a-z]+(?= [A-Z]|\b)|\d[\d,]*\d|\d)\b", sentence):
        if word.group(0) not in {"The", "In"}:
            spans.append((word.start(), word.end(), "year" if re.fullmatch(r"1\d{3}", word.group(0)) else "name"))
    spans = [(s, e, k if not sentence[s].isdigit() or k == "year" else "number") for s, e, k in spans]
    vocabulary = Counter("found build write move born".split())
    qs = questions_for(sentence, spans, random.Random(0), 10, vocabulary)
    out = {}
    for _, q, a in qs:
        q = re.sub(r"^(According to the text|Based on the passage|From the text:),? ", "", q)
        out[q[:1].upper() + q[1:]] = a
    return out


def _has(qs: dict[str, str], answer: str, *questions: str) -> bool:
    """One of ``questions`` (frames draw one wh-phrase each at random) was asked, with this answer."""
    return any(qs.get(q) == answer for q in questions)


def test_question_forms_on_hand_picked_sentences() -> None:
    qs = _questions("The town of Velmora was founded in 1723 by Ada Krenn.")
    assert _has(qs, "1723", *(f"{w} was the town of Velmora founded by Ada Krenn?" for w in YEAR_WH))
    assert _has(qs, "Ada Krenn", "Who founded the town of Velmora in 1723?")
    assert _has(qs, "Ada Krenn", "By whom was the town of Velmora founded in 1723?")
    assert _has(
        qs, "Velmora", "Which town was founded in 1723 by Ada Krenn?", "What town was founded in 1723 by Ada Krenn?"
    )

    qs = _questions("Ada Krenn built the old bridge in 1731.")
    assert _has(qs, "Ada Krenn", "Who built the old bridge in 1731?")
    assert _has(qs, "1731", *(f"{w} did Ada Krenn build the old bridge?" for w in YEAR_WH))
    assert _has(qs, "1731", *(f"{w} does the text say Ada Krenn built the old bridge?" for w in YEAR_WH))

    qs = _questions("The bridge has 14 arches.")
    assert _has(qs, "14", "How many arches does the bridge have?")

    qs = _questions("Tomas Berrick was born in Harlow.")
    assert _has(qs, "Harlow", "Where was Tomas Berrick born?", "In what place was Tomas Berrick born?")
    for q in qs:
        assert q[0].isupper() and q.endswith(("?", ".", '"')) and "  " not in q


# Sentences without facts: they make the documents long enough for a 60-token passage under any draw.
FILLER = " The weather there was often mild and the roads were long and quiet." * 4


def _docs() -> list[Document]:
    bodies = [
        TOWN,
        "The river Tamsk rises near Orlen. In 1802, the engineer Mira Solvek drained 12 lakes around Orlen. "
        "Solvek was paid $4 million by the Orlen Council. The works employed 2,300 labourers until 1811.",
        "Captain Jory Haldt sailed from Pellin in 1650 with 40 sailors. Haldt reached Corvel after 93 days. "
        "The ship Marrow carried 7 guns. Haldt died in Corvel in 1671.",
        "The Varn Institute was founded in 1911 by Elsa Quorn. Elsa Quorn wrote 17 books on glass. "
        "The institute moved to Brisk in 1934. It had 450 students in 1950.",
    ]
    docs = []
    for i, body in enumerate(bodies):
        for j in range(3):
            text = body + FILLER + f" Part {j} ends here."
            docs.append(Document(f"src{i % 2}/doc{i}-{j}", f"src{i % 2}", f"t{i}", text))
    return docs


def test_records_answers_in_contexts_and_multi_doc_distractors_lack_the_gold() -> None:
    config = CfConfig(seed=3, max_records=None, multi_doc_share=0.6, max_multi_tokens=800)
    records = make_counterfactual_records(_docs(), config)
    assert len(records) > 20
    multi = [r for r in records if len(r.contexts) > 1]
    assert multi and all(r.kind.startswith("multi_") for r in multi)
    for r in records:
        gold = r.answer.rstrip(".")
        holding = [c for c in r.contexts if gold in c]
        assert holding, (r.prompt, r.answer)
        if len(r.contexts) > 1:
            assert 2 <= len(r.contexts) <= 4
            normalized = [f" {normalize_answer(c)} " for c in r.contexts]
            assert sum(f" {normalize_answer(gold)} " in c for c in normalized) == 1  # only one passage holds it
    assert {r.source for r in records} == {"src0", "src1"}


def test_records_are_deterministic(tmp_path: Path) -> None:
    config = CfConfig(seed=1, max_records=40)
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    write_cf_records(a, make_counterfactual_records(_docs(), config))
    write_cf_records(b, make_counterfactual_records(list(_docs()), config))
    assert a.read_bytes() == b.read_bytes()
    row = json.loads(a.read_text().splitlines()[0])
    assert list(row) == ["contexts", "prompt", "answer", "kind", "source", "doc_id"]
    other = tmp_path / "c.jsonl"
    write_cf_records(other, make_counterfactual_records(_docs(), CfConfig(seed=2, max_records=40)))
    assert other.read_bytes() != a.read_bytes()


def test_generator_makes_many_distinct_names_outside_its_blocklist() -> None:
    gen = NameGenerator(vocabulary=["bridge"], blocklist=["Tovi"])
    rng = random.Random(0)
    used: set[str] = set()
    made = [gen.word(rng, 2, used) for _ in range(20_000)]
    assert len(set(made)) == len(made)
    assert "Tovi" not in made and "Bridge" not in made


def test_generator_never_emits_an_evalset_name() -> None:
    root = Path(__file__).resolve().parents[1] / "evalsets"
    assert root.is_dir(), "the counterfactual evaluation set ships in evalsets/"
    banned = evalset_words(root)
    assert banned
    gen = NameGenerator(blocklist=banned)
    rng = random.Random(0)
    used: set[str] = set()
    for syllables, draws in ((1, 1_000), (2, 20_000), (3, 20_000)):  # one syllable: ~2,800 words in all
        for _ in range(draws):
            assert gen.word(rng, syllables, used).lower() not in banned


def test_evalset_words_skip_the_real_text_dev_set(tmp_path) -> None:
    """evalsets/realtext_dev/ holds held-out corpus text with real names: reading it would change the blocklist
    and so the generated records."""
    (tmp_path / "counterfactual").mkdir()
    (tmp_path / "counterfactual" / "passages.jsonl").write_text('{"text": "Sleoshphu went home"}\n')
    (tmp_path / "realtext_dev").mkdir()
    (tmp_path / "realtext_dev" / "qa_dev.jsonl").write_text('{"context": "Linus Torvalds wrote it"}\n')
    assert evalset_words(tmp_path) == {"sleoshphu"}


# ---------------------------------------------------------------------------------------------------------
# The length mix and the number cap (CfConfig.buckets, CfConfig.number_share)

_PEOPLE = ("Ada Krenn", "Mira Solvek", "Jory Haldt", "Elsa Quorn", "Tomas Berrick", "Ilse Varga", "Oren Tallis")
_PLACES = ("Velmora", "Orlen", "Pellin", "Corvel", "Brisk", "Harlow", "Ostrava", "Tamsk")
_TEMPLATES = (
    "In {year}, {person} moved to {place}.",
    "The old mill near {place} had {n} workers.",
    "{person} wrote {n} letters from {place} in {year}.",
    "The bridge at {place} was built by {person} in {year}.",
    "The weather there was often mild and the roads were long and quiet.",
    "The council of {place} paid {person} {n} crowns for the work.",
    "Many people in the valley kept sheep and the farms were small.",
)


def _long_docs() -> list[Document]:
    """Eight documents of ~400 to ~2,200 (approximate) tokens: long enough for every bucket. Do not change: the
    hash below was recorded from them."""
    rng = random.Random(11)
    docs = []
    for i in range(8):
        parts = []
        for _ in range(40 + 25 * i):
            t = rng.choice(_TEMPLATES)
            parts.append(
                t.format(
                    year=rng.randint(1500, 1990), person=rng.choice(_PEOPLE), place=rng.choice(_PLACES),
                    n=rng.randint(12, 900),
                )
            )  # fmt: skip
        docs.append(Document(f"s{i % 3}/long{i}", f"s{i % 3}", f"long {i}", " ".join(parts)))
    return docs


def _sha256(records: list[CfRecord]) -> str:
    """The sha256 of the records as write_cf_records writes them."""
    h = hashlib.sha256()
    for r in records:
        h.update((json.dumps(r.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))
    return h.hexdigest()


def _number_kind(r: CfRecord) -> bool:
    return r.kind.removeprefix("multi_") in NUMBER_KINDS


def test_default_config_reproduces_the_records_made_before_the_mix_was_configurable() -> None:
    # The seed-0 and seed-1 record sets of docs/training.md are reproducible only while the defaults are unchanged.
    assert BUCKETS == (("<=256", 60, 256, 0.45), ("257-512", 257, 512, 0.30), ("513-1400", 513, 1400, 0.25))
    assert CfConfig() == CfConfig(buckets=BUCKETS, number_share=None)
    assert CfConfig(buckets=[list(b) for b in BUCKETS]) == CfConfig()  # lists are normalised to tuples
    # Hashes recorded with the code at bb48af6 (before CfConfig.buckets and number_share existed).
    long0 = make_counterfactual_records(_long_docs(), CfConfig(seed=0, max_records=None))
    assert len(long0) == 825
    assert {b for b in summary(long0)["bucket"]} == {"<=256", "257-512", "513-1400"}
    assert _sha256(long0) == "f6a187b44632057a7563fe3c9ce030694f8b19d2742e770a6894b9dcfe58e5c6"
    short1 = make_counterfactual_records(_docs(), CfConfig(seed=1, max_records=None))
    assert _sha256(short1) == "b688db4b2e826dafa43ca59272cb7563272ac1d42bd0e1dc73a2619046f8a4ac"
    explicit = make_counterfactual_records(_docs(), CfConfig(seed=1, max_records=None, buckets=BUCKETS))
    assert _sha256(explicit) == _sha256(short1)


def test_number_share_caps_number_questions_at_every_prefix() -> None:
    free = make_counterfactual_records(_docs(), CfConfig(seed=0, max_records=None))
    assert sum(map(_number_kind, free)) / len(free) > 0.5  # the fixture is number-heavy without the cap
    for share in (0.1, 0.3):
        records = make_counterfactual_records(_docs(), CfConfig(seed=0, max_records=None, number_share=share))
        assert len(records) > 100
        numbers = 0
        for i, r in enumerate(records, 1):
            numbers += _number_kind(r)
            assert numbers <= share * i + 1, (share, i, numbers)
        assert numbers / len(records) <= share + 0.01
    # Name questions take the room the cap leaves, all three name kinds among them.
    capped = make_counterfactual_records(_long_docs(), CfConfig(seed=0, max_records=None, number_share=0.25))
    free_long = make_counterfactual_records(_long_docs(), CfConfig(seed=0, max_records=None))
    kinds = Counter(r.kind.removeprefix("multi_") for r in capped)
    kinds_free = Counter(r.kind.removeprefix("multi_") for r in free_long)
    assert sum(kinds[k] for k in NUMBER_KINDS) / len(capped) <= 0.25
    for k in ("who", "where", "which"):
        assert kinds[k] > kinds_free[k]


def test_a_long_length_mix_makes_long_passages() -> None:
    buckets = parse_length_mix("60-256:0.1,257-512:0.2,513-1024:0.4,1025-1500:0.3")
    assert buckets == (
        ("<=256", 60, 256, 0.1), ("257-512", 257, 512, 0.2), ("513-1024", 513, 1024, 0.4),
        ("1025-1500", 1025, 1500, 0.3),
    )  # fmt: skip
    records = make_counterfactual_records(_long_docs(), CfConfig(seed=0, max_records=None, buckets=buckets))
    per_bucket = summary(records, buckets)["bucket"]
    assert set(per_bucket) == {"<=256", "257-512", "513-1024", "1025-1500"}
    assert per_bucket["513-1024"] + per_bucket["1025-1500"] > len(records) / 2
    assert max(r.passage_tokens for r in records) > 1024
    default = make_counterfactual_records(_long_docs(), CfConfig(seed=0, max_records=None))
    assert max(r.passage_tokens for r in default) <= 1400 + 50  # the default mix stops at 1,400 (+ substitution)
    assert sum(r.passage_tokens > 512 for r in records) > sum(r.passage_tokens > 512 for r in default)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"buckets": ()}, "at least one"),
        ({"buckets": (("a", 60, 256),)}, "not a"),
        ({"buckets": (("a", 300, 256, 1.0),)}, "lowest <= highest"),
        ({"buckets": (("a", 60, 256, 0.5), ("b", 200, 512, 0.5))}, "ascending"),
        ({"buckets": (("a", 60, 256, 0.5), ("a", 257, 512, 0.5))}, "distinct"),
        ({"buckets": (("a", 60, 256, 0.5), ("b", 257, 512, 0.4))}, "sum to 1"),
        ({"buckets": (("a", 60, 256, 1.5),)}, "share"),
        ({"buckets": (("a", 60.0, 256, 1.0),)}, "integers"),
        ({"number_share": 1.5}, "number_share"),
        ({"number_share": -0.1}, "number_share"),
    ],
)
def test_bad_length_mix_or_number_share_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CfConfig(**kwargs)


@pytest.mark.parametrize("text", ["", "60-256", "60:256:1.0", "60-256:0.5,257-512:0.4", "256-60:1.0"])
def test_parse_length_mix_refuses_bad_text(text: str) -> None:
    with pytest.raises(ValueError):
        parse_length_mix(text)


def test_cli_parses_the_length_mix_and_number_share(capsys: pytest.CaptureFixture[str]) -> None:
    from icformer_rag.cli import build_parser, main

    args = build_parser().parse_args(
        ["data", "counterfactual", "--length-mix", "60-256:0.2,257-1500:0.8", "--number-share", "0.25"]
    )
    assert args.length_mix == (("<=256", 60, 256, 0.2), ("257-1500", 257, 1500, 0.8))
    assert args.number_share == 0.25
    defaults = build_parser().parse_args(["data", "counterfactual"])
    assert defaults.length_mix is None and defaults.number_share is None  # CfConfig's defaults: today's records
    assert defaults.strict_mix is False
    assert build_parser().parse_args(["data", "counterfactual", "--strict-mix"]).strict_mix is True
    assert main(["data", "counterfactual", "--length-mix", "60-256:0.5"]) == 2
    assert "sum to 1" in capsys.readouterr().err
    assert main(["data", "counterfactual", "--number-share", "1.5"]) == 1  # the data command: a ValueError is 1
    assert "number_share must be None or in [0, 1]" in capsys.readouterr().err


def test_strict_mix_meets_the_length_mix_with_fewer_records() -> None:
    buckets = parse_length_mix("60-256:0.2,257-512:0.25,513-1024:0.3,1025-1500:0.25")
    docs = _long_docs() + _docs()  # the short documents alone would fill the first bucket far past its share
    loose = make_counterfactual_records(docs, CfConfig(seed=0, max_records=None, buckets=buckets))
    strict = make_counterfactual_records(docs, CfConfig(seed=0, max_records=None, buckets=buckets, strict_mix=True))
    assert 100 < len(strict) < len(loose)
    per_bucket = summary(strict, buckets)["bucket"]
    for name, _, _, share in buckets:
        assert abs(per_bucket[name] / len(strict) - share) < 0.06, (name, per_bucket)
    assert summary(loose, buckets)["bucket"]["<=256"] / len(loose) > 0.35
    assert CfConfig().strict_mix is False
