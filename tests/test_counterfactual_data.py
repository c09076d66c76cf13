"""Counterfactual training records: substitution, question forms, multi-document records, determinism.

Fast: small in-memory documents, the approximate token counter, no LLM and no downloads.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

from icformer_rag.data.counterfactual import (
    CfConfig,
    NameGenerator,
    evalset_words,
    make_counterfactual_records,
    questions_for,
    substitute,
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
