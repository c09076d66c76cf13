"""Counterfactual instruction records: real training passages whose facts are replaced by invented ones.

Digests carry the topic, and the LLM fills in the facts from what it knows about the topic. Training on
questions whose answers exist only in the passage rewards reading instead. Each record is made so:

1. A passage: a run of whole sentences of a TRAINING document (60 to ~1,400 tokens; short, medium and long
   passages in a fixed mix, chosen by deficit so that sources with short documents do not skew it).
2. Substitution: every name word (capitalised, and more often capitalised than not in the corpus), every
   number of two or more digits (years stay plausible years, counts keep their digit count), and the month
   and day of dates are replaced consistently within the passage (same original -> same replacement, all
   occurrences) by invented strings from this module's own syllable generator.
3. Questions on the substituted facts only: years, dates, counts, amounts, "who" (subject or "by" agent),
   "which <noun>", "where" (after in/at/from/near) in several frames each (inversion, do-support, "does the
   text say", echo), plus at most ~30% fill-in-the-blank. The gold answer is the substituted span.
4. About a quarter of the records carry 2-4 passages (one with the answer, distractors without it).

``build_counterfactual`` writes the records; ``python -m icformer_rag.data counterfactual`` runs it.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..key_terms import NOT_NAMES
from .corpus import CorpusConfig, prepare_documents, read_docs, split_score
from .instruct import TokenCounter, approx_token_counter, normalize_answer, sentence_spans
from .sources import Document, get_sources

__all__ = [
    "BUCKETS",
    "CfConfig",
    "CfRecord",
    "NUMBER_KINDS",
    "NameGenerator",
    "Substitution",
    "build_counterfactual",
    "evalset_words",
    "make_counterfactual_records",
    "parse_length_mix",
    "questions_for",
    "substitute",
    "summary",
    "training_documents",
    "word_case_counts",
    "write_cf_records",
]

BUCKETS: tuple[tuple[str, int, int, float], ...] = (
    ("<=256", 60, 256, 0.45),
    ("257-512", 257, 512, 0.30),
    ("513-1400", 513, 1400, 0.25),
)
"""Passage length buckets in tokens: (name, lowest, highest, target share of records). The default of
:attr:`CfConfig.buckets`; the records of docs/training.md (seeds 0 and 1) were made with it."""

Bucket = tuple[str, int, int, float]

NUMBER_KINDS = frozenset({"count", "year", "amount", "date"})
"""Question kinds whose answer is a number (capped by :attr:`CfConfig.number_share`)."""


def _check_buckets(buckets: Sequence[Sequence[Any]]) -> tuple[Bucket, ...]:
    """``buckets`` as a tuple of (name, lowest, highest, share) tuples; ValueError when they are not valid."""
    if not buckets:
        raise ValueError("buckets must hold at least one (name, lowest, highest, share) bucket")
    out: list[Bucket] = []
    for b in buckets:
        if len(b) != 4:
            raise ValueError(f"bucket {b!r} is not a (name, lowest, highest, share) tuple")
        name, lo, hi, share = b
        if not isinstance(name, str) or not name:
            raise ValueError(f"bucket {b!r}: the name must be a non-empty string")
        if isinstance(lo, bool) or isinstance(hi, bool) or not isinstance(lo, int) or not isinstance(hi, int):
            raise ValueError(f"bucket {name!r}: lowest and highest must be integers (tokens)")
        if not 1 <= lo <= hi:
            raise ValueError(f"bucket {name!r}: need 1 <= lowest <= highest, got {lo}..{hi}")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
            raise ValueError(f"bucket {name!r}: the share must be a number in [0, 1], got {share!r}")
        if out and lo <= out[-1][2]:
            raise ValueError(f"bucket {name!r} starts at {lo}, not above the previous bucket's highest {out[-1][2]}: "
                             "buckets must be in ascending order and must not overlap")  # fmt: skip
        out.append((name, lo, hi, share))
    if len({b[0] for b in out}) != len(out):
        raise ValueError("bucket names must be distinct")
    total = sum(b[3] for b in out)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"bucket shares must sum to 1, got {total:g}")
    return tuple(out)


def parse_length_mix(text: str) -> tuple[Bucket, ...]:
    """Buckets from ``"LO-HI:SHARE,LO-HI:SHARE,..."`` (tokens, ascending), e.g. ``"60-256:0.2,257-512:0.8"``.

    The first bucket is named ``"<=HI"`` and the others ``"LO-HI"``, as in :data:`BUCKETS`. ValueError when the
    text or the buckets are not valid (see :class:`CfConfig`).
    """
    buckets: list[Bucket] = []
    for i, item in enumerate(p.strip() for p in text.split(",")):
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)\s*:\s*([0-9]*\.?[0-9]+)", item)
        if not m:
            raise ValueError(f"length mix item {item!r} is not LO-HI:SHARE (e.g. 257-512:0.25)")
        lo, hi, share = int(m.group(1)), int(m.group(2)), float(m.group(3))
        buckets.append((f"<={hi}" if i == 0 else f"{lo}-{hi}", lo, hi, share))
    return _check_buckets(buckets)


@dataclass(frozen=True)
class CfConfig:
    """How counterfactual records are made."""

    seed: int = 0
    """Seeds every choice: passages, invented strings, question frames, multi-document draws."""
    max_records: int | None = 120_000
    """Stop after this many records."""
    forms_per_fact: int = 2
    """Question forms (frames) asked per substituted fact."""
    max_records_per_passage: int = 8
    """So that fact-dense passages do not take over."""
    max_passages_per_doc: int = 16
    """So that one long document (a State of the Union address) does not fill its source's share."""
    cloze_share: float = 0.30
    """Fill-in-the-blank questions stay under this share of all records."""
    multi_doc_share: float = 0.25
    """Share of records with 2-4 passages (one holds the answer)."""
    max_multi_tokens: int = 1_800
    """Passages of a multi-document record together stay under this many tokens."""
    passes: int = 3
    """Passes over each source's documents: a later pass cuts other passages (other lengths, other starts) and
    invents other names and numbers, so the same real text teaches reading again with new answers. Sources
    whose documents give few facts (plays, code documentation) run out first; passes keep them in the mix."""
    buckets: tuple[Bucket, ...] = BUCKETS
    """Passage length mix: (name, lowest, highest, target share) in tokens, ascending, not overlapping, shares
    summing to 1. Each passage aims at the bucket most behind its share; passages shorter than the first bucket's
    lowest are not used. The default is :data:`BUCKETS` (the records of docs/training.md)."""
    number_share: float | None = None
    """When set, number questions (count, year, amount, date; also as multi_*) stay under this share of all
    records, as ``cloze_share`` caps cloze; a passage with more questions than ``max_records_per_passage`` then
    gives its name questions (who, where, which) first. None: no cap, questions in shuffled order (the
    behaviour of the records of docs/training.md)."""
    strict_mix: bool = False
    """Enforce the length mix: a passage whose bucket already holds its share of the records is dropped (no
    records), so that short documents (the wiki source is all under ~500 tokens) cannot fill the long buckets'
    shares with short passages. Fewer records: the long documents' passages bound the total. False: the buckets
    only steer which length each passage aims at (the records of docs/training.md)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "buckets", _check_buckets(self.buckets))
        if self.number_share is not None and (
            isinstance(self.number_share, bool) or not 0.0 <= self.number_share <= 1.0
        ):
            raise ValueError(f"number_share must be None or in [0, 1], got {self.number_share!r}")
        if self.max_records is not None and self.max_records < 1:
            raise ValueError("max_records must be None or >= 1")
        if (
            self.passes < 1
            or self.forms_per_fact < 1
            or self.max_records_per_passage < 1
            or self.max_passages_per_doc < 1
        ):
            raise ValueError("passes, forms_per_fact, max_records_per_passage, max_passages_per_doc must be >= 1")
        if not 0.0 <= self.cloze_share <= 1.0 or not 0.0 <= self.multi_doc_share <= 1.0:
            raise ValueError("cloze_share and multi_doc_share must be in [0, 1]")


@dataclass(frozen=True)
class CfRecord:
    """One record: answer ``prompt`` from ``contexts`` (one passage, or several for multi-document records)."""

    contexts: list[str]
    prompt: str
    answer: str
    kind: str
    source: str
    doc_id: str
    tokens: int = field(default=0, compare=False)  # all contexts together; reported, not written
    passage_tokens: int = field(default=0, compare=False)  # the passage holding the answer; reported

    def to_json(self) -> dict[str, Any]:
        return {
            "contexts": self.contexts,
            "prompt": self.prompt,
            "answer": self.answer,
            "kind": self.kind,
            "source": self.source,
            "doc_id": self.doc_id,
        }


# ---------------------------------------------------------------------------------------------------------
# Invented names. The syllable inventory is this module's own (the evaluation set uses another generator);
# 26 onsets x 9 nuclei x 12 codas = 2,808 syllables, so two syllables alone give ~7.9 million words.

_ONSETS = ("b", "br", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "kr", "l", "m", "n", "p", "pr", "r", "s",
           "sk", "st", "t", "tr", "v", "z", "th")  # fmt: skip
_NUCLEI = ("a", "e", "i", "o", "u", "ae", "ei", "ou", "y")
_CODAS = ("", "", "n", "r", "l", "s", "m", "k", "nd", "rk", "st", "th")


# Evaluation sets of real text (held-out corpus documents, real names) under ``evalsets/``: not a source of invented
# names. The blocklist was built without them (the 55k records of docs/training.md, session 9, sha256
# 9ae6a3c2...), so reading them would change the generated records.
REAL_TEXT_EVALSETS = frozenset({"realtext_dev"})


def evalset_words(folder: str | Path = "evalsets") -> frozenset[str]:
    """Every capitalised word (lower-cased) in the text files under ``folder``; empty when it does not exist.

    The generator never emits these, so training names stay disjoint from the evaluation set's names. Folders
    named in :data:`REAL_TEXT_EVALSETS` (real text, not invented names) are skipped.
    """
    root = Path(folder)
    if not root.is_dir():
        return frozenset()
    words: set[str] = set()
    for path in sorted(root.rglob("*")):
        if REAL_TEXT_EVALSETS.intersection(path.relative_to(root).parts):
            continue
        if path.is_file() and path.suffix in {".jsonl", ".json", ".txt", ".md", ".csv", ".tsv", ".py"}:
            text = path.read_text(encoding="utf-8", errors="ignore")
            words.update(w.lower() for w in re.findall(r"[A-Z][a-z]+", text))
    return frozenset(words)


class NameGenerator:
    """Invented words from random syllables: never a word of ``vocabulary`` or ``blocklist`` (lower-cased)."""

    def __init__(self, vocabulary: Iterable[str] = (), blocklist: Iterable[str] = ()) -> None:
        self.banned = {w.lower() for w in vocabulary} | {w.lower() for w in blocklist}

    def word(self, rng: random.Random, syllables: int, used: set[str]) -> str:
        """A capitalised invented word of ``syllables`` syllables, not in ``used`` (which it joins)."""
        for _ in range(200):
            parts = []
            for i in range(syllables):
                onset = rng.choice(_ONSETS) if i == 0 or rng.random() < 0.8 else ""
                parts.append(onset + rng.choice(_NUCLEI) + rng.choice(_CODAS if i == syllables - 1 else _CODAS[:8]))
            w = "".join(parts)
            if len(w) >= 3 and w not in self.banned and w not in used:
                used.add(w)
                return w.capitalize()
        raise RuntimeError("name generator exhausted")  # practically impossible: millions of words

    def like(self, rng: random.Random, original: str, used: set[str]) -> str:
        """An invented word of about the length of ``original``."""
        n = len(original)
        syllables = rng.choice((1, 2)) if n <= 4 else 2 if n <= 7 else rng.choice((2, 3))
        return self.word(rng, syllables, used)


# ---------------------------------------------------------------------------------------------------------
# Finding and replacing facts

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")  # fmt: skip
_MONTH_SET = frozenset(_MONTHS)
_DAYS = frozenset("Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split())
_CAP_WORD = re.compile(r"(?<![\w'\u2019.])[A-Z][a-z]+(?![\w])")
_NUM = re.compile(r"(?<![\w.,])\d[\d,.]*\d(?![\w])|(?<![\w.,])\d(?![\w])")
_WORD = re.compile(r"[A-Za-z][a-z]+")
# Capitalised words that are never name words, on top of key_terms' list (sentence openers, pronouns).
_NEVER_NAMES = (
    NOT_NAMES
    | _DAYS
    | frozenset(
        "Yes Let Now Here Thus So Do Does Did Is Are Was Were Be Has Have Had Will Would Can Could Should Shall May"
        " Might Must Example Examples Use Using Note Notes Warning Table Figure See Also Only Even Just More Other"
        " Well Oh O Sir Lord Lady King Queen God Thou Thee Thy Yet Nor Whose Whom Him Them Me Us".split()
    )
)


def word_case_counts(texts: Iterable[str]) -> tuple[Counter[str], Counter[str]]:
    """How often each word occurs capitalised ("Lincoln") and in lower case ("lincoln") in ``texts``."""
    cap: Counter[str] = Counter()
    low: Counter[str] = Counter()
    for text in texts:
        for w in _WORD.findall(text):
            (cap if w[0].isupper() else low)[w.lower()] += 1
    return cap, low


def _sentence_initial(text: str, start: int) -> bool:
    """True when the word at ``start`` opens a sentence, a line or a quotation (capitalised for that reason)."""
    i = start - 1
    while i >= 0 and text[i] in " \t\"'\u201c\u2018([*-\u2022":
        i -= 1
    return i < 0 or text[i] in ".!?:;\n" or (text[i].isdigit() and text[max(0, i - 3) : i + 1].strip().isdigit())


@dataclass(frozen=True)
class Substitution:
    """A passage after substitution: ``mapping`` original -> invented, ``spans`` the replaced character spans
    of ``text`` with their kind (name, year, number, month, day)."""

    text: str
    mapping: dict[str, str]
    spans: tuple[tuple[int, int, str], ...]


def _invent_number(original: str, kind: str, rng: random.Random, taken: set[str]) -> str:
    """A different number of the same shape: a year stays a year near it, a day a valid day, a count keeps its
    digit count (so its magnitude) and its separators."""
    for _ in range(100):
        if kind == "year":
            y = int(original)
            new = str(min(2029, max(1000, y + rng.choice((-1, 1)) * rng.randint(1, 80))))
        elif kind == "day":
            new = str(rng.randint(10 if len(original) == 2 else 2, 28 if len(original) == 2 else 9))
        else:
            digits = [c for c in original if c.isdigit()]
            new_digits = [str(rng.randint(1 if i == 0 and len(digits) > 1 else 2, 9) if i == 0 else rng.randint(0, 9))
                          for i in range(len(digits))]  # fmt: skip
            it = iter(new_digits)
            new = "".join(next(it) if c.isdigit() else c for c in original)
        if new != original and new not in taken:
            return new
    return original


_YEAR_RE = re.compile(r"1\d{3}|20\d{2}")
_DATE_DAY = re.compile(rf"\b(?:{'|'.join(_MONTHS)}) (\d{{1,2}})\b(?!\d)|\b(\d{{1,2}}) (?:{'|'.join(_MONTHS)})\b")


def substitute(
    text: str,
    rng: random.Random,
    names: NameGenerator,
    cap_counts: Counter[str],
    low_counts: Counter[str],
) -> Substitution:
    """Replace the passage's names, numbers, years and dates consistently by invented ones (see module doc).

    A capitalised word is a name word when it is more often capitalised than not in the corpus (so "The",
    "Functions" are not) and it appears somewhere in the passage mid-sentence or next to another capitalised
    word (so a sentence-opening "Display" is not). The numbers 0 and 1 are left alone: they are rarely facts,
    and changing them breaks agreement ("1 file").
    """
    # Which words are names, and which numbers are days of a date (they must stay valid days).
    candidates: dict[str, bool] = {}
    for m in _CAP_WORD.finditer(text):
        w = m.group(0)
        if (
            len(w) < 3
            or w in _NEVER_NAMES
            or w in _MONTH_SET
            or cap_counts.get(w.lower(), 1) <= low_counts.get(w.lower(), 0)
        ):
            continue
        nxt = text[m.end() : m.end() + 2]
        multi = bool(re.match(r" [A-Z]", nxt)) or bool(
            re.search(r"[A-Z][a-z]+ $", text[max(0, m.start() - 20) : m.start()])
        )
        candidates[w] = candidates.get(w, False) or multi or not _sentence_initial(text, m.start())
    name_words = {w for w, ok in candidates.items() if ok}
    days = {m.group(1) or m.group(2) for m in _DATE_DAY.finditer(text)}

    events: list[tuple[int, int, str, str]] = []  # start, end, kind, original
    for m in _CAP_WORD.finditer(text):
        w = m.group(0)
        if w in name_words:
            events.append((m.start(), m.end(), "name", w))
        elif w in _MONTH_SET and (w != "May" or re.match(r" \d", text[m.end() : m.end() + 2])):
            events.append((m.start(), m.end(), "month", w))
    for m in _NUM.finditer(text):
        s = m.group(0)
        if s in {"0", "1"}:
            continue
        if re.fullmatch(r"\d", s) and _sentence_initial(text, m.start()) and text[m.end() : m.end() + 1] in ".)":
            continue  # "1." "2)" list numbering, not a fact
        kind = "day" if s in days else "year" if _YEAR_RE.fullmatch(s) else "number"
        events.append((m.start(), m.end(), kind, s))
    events.sort()

    originals = {e[3] for e in events}
    used: set[str] = {o.lower() for o in originals}
    taken: set[str] = set(originals)
    mapping: dict[str, str] = {}
    out: list[str] = []
    spans: list[tuple[int, int, str]] = []
    pos = 0
    length = 0
    for start, end, kind, original in events:
        if start < pos:
            continue
        if original not in mapping:
            if kind == "name":
                mapping[original] = names.like(rng, original, used)
            elif kind == "month":
                others = [mo for mo in _MONTHS if mo not in taken and mo != "May"]
                mapping[original] = rng.choice(others) if others else original
            else:
                mapping[original] = _invent_number(original, kind, rng, taken)
            taken.add(mapping[original])
        piece = text[pos:start]
        new = mapping[original]
        if kind == "name" and (art := re.search(r"(?<![\w])([Aa])n? $", piece)):
            # "an Austrian" -> "a Drelvan", "a Prussian" -> "an Ostrek": the article follows the new word
            article = art.group(1) + ("n" if new[0] in "AEIOU" else "")
            piece = piece[: art.start()] + article + " "
        out.append(piece)
        length += len(piece)
        out.append(new)
        spans.append((length, length + len(new), kind))
        length += len(new)
        pos = end
    out.append(text[pos:])
    return Substitution("".join(out), mapping, tuple(spans))


# ---------------------------------------------------------------------------------------------------------
# Questions

_AUX = frozenset("was were is are has have had will would can could should may might must".split())
_PRONOUNS = frozenset("he she it they we i you this that these those one there".split())
_LOWER_OPENERS = frozenset(
    "The A An This That These Those There It He She They We Its His Her Their Our One Some Each Every All Both"
    " Many Most Such No Any".split()
)
_IRREGULAR_PAST = {
    "built": "build", "wrote": "write", "made": "make", "became": "become", "began": "begin", "took": "take",
    "gave": "give", "won": "win", "led": "lead", "left": "leave", "held": "hold", "met": "meet", "sent": "send",
    "told": "tell", "said": "say", "brought": "bring", "bought": "buy", "taught": "teach", "fought": "fight",
    "went": "go", "came": "come", "saw": "see", "ran": "run", "rose": "rise", "fell": "fall", "grew": "grow",
    "knew": "know", "drew": "draw", "spoke": "speak", "chose": "choose", "stood": "stand", "lost": "lose",
    "paid": "pay", "kept": "keep", "sold": "sell", "spent": "spend", "got": "get", "found": "find",
    "struck": "strike", "sang": "sing", "flew": "fly", "lay": "lie", "sat": "sit", "bore": "bear", "wore": "wear",
}  # fmt: skip
_PARTICIPLE_TO_PAST = {
    "written": "wrote", "built": "built", "made": "made", "given": "gave", "taken": "took", "drawn": "drew",
    "sung": "sang", "spoken": "spoke", "chosen": "chose", "led": "led", "held": "held", "won": "won",
    "begun": "began", "shown": "showed", "seen": "saw", "sold": "sold", "sent": "sent", "brought": "brought",
    "founded": "founded", "found": "found", "paid": "paid", "taught": "taught", "kept": "kept", "struck": "struck",
    "beaten": "beat", "killed": "killed", "ruled": "ruled",
}  # fmt: skip
_NOT_NOUNS = frozenset(
    "same other first last next new old following above below whole main only second third former latter"
    " great good own few many such most more very".split()
)
_STOP = frozenset(
    "the a an of in on at to by for from with and or but is are was were be been has have had does did do what"
    " which who whom when where how many much year text according passage say says does that this it as its"
    " his her their there than then into not no name person".split()
)
_PREFIXES = ("", "", "According to the text, ", "Based on the passage, ", "From the text: ")


def _lemma(past: str, vocabulary: Counter[str] | None) -> str | None:
    """The base form of a past-tense verb when it can be told safely ("founded" -> "found"), else None."""
    if past in _IRREGULAR_PAST:
        return _IRREGULAR_PAST[past]
    if not past.endswith("ed") or len(past) < 5 or vocabulary is None:
        return None
    if past.endswith("ied"):
        return past[:-3] + "y"
    stem = past[:-2]
    if len(stem) >= 3 and stem[-1] == stem[-2] and stem[-1] not in "lsfz" and vocabulary.get(stem[:-1], 0) > 0:
        return stem[:-1]
    with_e = past[:-1]
    a, b = vocabulary.get(stem, 0) > 0, vocabulary.get(with_e, 0) > 0
    if a == b:  # neither known, or both ("used": "us"/"use"): not safe
        return None
    return stem if a else with_e


def _tidy(q: str) -> str:
    q = re.sub(r"\s+", " ", q)
    q = re.sub(r"\s+([,.;:?!])", r"\1", q)
    q = re.sub(r",\s*,", ",", q)
    q = re.sub(r"[,;:]\s*\?$", "?", q)
    return q.strip()


def _lower_first(clause: str) -> str:
    w = clause.split(" ", 1)[0]
    return clause[:1].lower() + clause[1:] if w in _LOWER_OPENERS else clause


def _clause_without(sentence: str, start: int, end: int) -> str:
    """The sentence with [start, end) removed, with its fronted comma and closing punctuation gone."""
    before, after = sentence[:start].rstrip(), sentence[end:].lstrip()
    if not before and after.startswith(","):
        after = after[1:].lstrip()  # "In 1723, Ada Krenn ..." -> "Ada Krenn ..."
    if before.endswith(",") and after.startswith(","):
        after = after[1:]
    clause = f"{before} {after}".strip()
    clause = re.sub(r"[\s.!?;:,\"'\u201d\u2019]+$", "", clause).lstrip("\"'\u201c\u2018 ")
    return _tidy(clause)


def _split_subject(clause: str) -> tuple[str, str, str] | None:
    """``(subject, verb, rest)`` for a clause "subject verb rest" whose subject is 1-8 words, no comma; the verb
    is an auxiliary or a past-tense form. None when the clause does not look like that."""
    words = clause.split(" ")
    if words[0].rstrip(",") in {"But", "And", "So", "Yet", "Or", "Nor", "Now", "Then", "Still"} or "," in words[0]:
        return None  # "But we have ..." / "After, X was ...": no subject at the front
    for i, w in enumerate(words[:9]):
        if i == 0:
            continue
        if "," in w or w.lower() in {"and", "or", "but", "when", "if", "which", "who", "that"}:
            return None
        if w in _AUX or w in _IRREGULAR_PAST or (w.endswith("ed") and w.islower() and len(w) > 4):
            if words[0] in {"In", "On", "At", "By", "From", "After", "Before", "Since", "During", "When", "If"}:
                return None
            subject = " ".join(words[:i])
            if words[i - 1].lower() in _STOP | {"than", "about", "into", "over", "under"}:
                return None  # "Callbacks taking longer than" is not a subject
            return _lower_first(subject), w, " ".join(words[i + 1 :])
    return None


@dataclass(frozen=True)
class _Fact:
    kind: str  # year, date, count, amount, who, which, where
    answer: str
    gap: tuple[int, int]  # the phrase removed from the sentence: "in 1723", "12 bridges", "by Ada Krenn"
    wh: tuple[str, ...]  # wh-phrases for direct questions
    echo: str  # the wh-phrase put in place of the gap for an echo question
    subject_gap: bool = False  # the gap is the clause's subject: "Ada Krenn built ..." -> "Who built ...?"
    noun: str = ""  # "which <noun>"


def _frames(sentence: str, fact: _Fact, vocabulary: Counter[str] | None) -> list[tuple[str, str]]:
    """(frame, question) pairs for one fact of one sentence, all grammatical by construction."""
    clause = _clause_without(sentence, *fact.gap)
    if len(clause.split()) < 3:
        return []
    out: list[tuple[str, str]] = []
    wh = fact.wh
    if fact.subject_gap:
        rest = clause
        if fact.kind == "who":
            if rest.split(" ", 1)[0] in {"are", "were", "have"}:
                return []  # a plural verb: "who are related to ..." reads wrong
            if not (rest.split(" ", 1)[0] in _AUX or rest.split(" ", 1)[0] in _IRREGULAR_PAST
                    or re.match(r"[a-z]+ed\b", rest)):  # fmt: skip
                return []
            out.append(("direct", f"{wh[0]} {rest}?"))
            out.append(("embed", f"{wh[0]} does the text say {rest}?"))
            if len(fact.answer.split()) >= 2:  # a two-part name is most likely a person's: "whoever" fits
                out.append(("name", f"Give the name of whoever {rest}."))
        else:
            for w in wh:
                out.append(("direct", f"{w} {rest}?"))
        return out
    fronted = fact.gap[0] == 0
    # A gap after a coordination or a subordinate clause ("... has 14 arches and cost $4 million"): moving it
    # to the front garbles the sentence, so only the echo question is asked.
    if not fronted and re.search(r"\b(?:and|or|but|while|which|who|that|because|if)\b|[,;(]", sentence[: fact.gap[0]]):
        return [("echo", _echo(sentence, fact))] if fact.kind in _ECHO_KINDS else []
    parsed = _split_subject(clause)
    if fact.kind == "who" and parsed and parsed[1] in {"was", "were", "is", "are"}:
        # "X was founded in 1723 by Ada Krenn" -> "Who founded X in 1723?"
        subject, aux, rest = parsed
        part, _, tail = rest.partition(" ")
        past = _PARTICIPLE_TO_PAST.get(part) or (part if part.endswith("ed") else None)
        if past and subject.lower() not in _PRONOUNS:
            out.append(("active", f"Who {past} {subject} {tail}?"))
            out.append(("by-whom", f"By whom {aux} {subject} {rest}?"))
        out.append(("echo", f"{clause} by whom?"))
        return [(f, _tidy(q)) for f, q in out]
    if parsed:
        subject, verb, rest = parsed
        main_have = verb in {"has", "have", "had"} and not re.match(r"(?:been|[a-z]+ed|[a-z]+en)\b", rest)
        for w in wh:
            if main_have:  # "the bridge has 14 arches" -> "how many arches does the bridge have"
                aux = {"has": "does", "have": "do", "had": "did"}[verb]
                out.append(("do", f"{w} {aux} {subject} have {rest}?"))
            elif verb in _AUX:
                out.append(("invert", f"{w} {verb} {subject} {rest}?"))
            elif (lemma := _lemma(verb, vocabulary)) is not None:
                out.append(("do", f"{w} did {subject} {lemma} {rest}?"))
    if parsed:  # only a clause that starts with its subject embeds ("... does the text say <clause>")
        for w in wh[:2]:
            out.append(("embed", f"{w} does the text say {_lower_first(clause)}?"))
        if fact.kind == "which" and fact.noun:
            out.append(("name-of", f"What is the name of the {fact.noun} that {_lower_first(clause)}?"))
    if not fronted and fact.kind in _ECHO_KINDS:  # "In what year, the composer ..." is no question
        out.append(("echo", _echo(sentence, fact)))
    return [(f, _tidy(q)) for f, q in out]


def _echo(sentence: str, fact: _Fact) -> str:
    """The sentence with the gap replaced by the wh-phrase: "The bridge has how many arches?"."""
    echo = (sentence[: fact.gap[0]] + fact.echo + sentence[fact.gap[1] :]).strip()
    echo = re.sub(r"[\s.!?;:,\"'\u201d\u2019]+$", "", echo).lstrip("\"'\u201c\u2018 ")
    return _tidy(echo[:1].upper() + echo[1:] + "?")


# Echo questions read as questions for these kinds ("The bridge has how many arches?"), not for "which" and
# "where" in the middle of a long sentence ("... fall under which shadow power, our response ...").
_ECHO_KINDS = frozenset({"year", "date", "count", "amount", "who"})
_YEAR_PREP = {"in": ("In what year", "When", "What year", "In which year"), "since": ("Since when", "Since what year"),
              "by": ("By what year",), "until": ("Until when", "Until what year"), "from": ("From what year",),
              "during": ("During what year", "When"), "before": ("Before what year",),
              "after": ("After what year",)}  # fmt: skip
_PLACE_PREP = {"in": ("Where", "In what place"), "at": ("Where", "At what place"), "near": ("Near what place",),
               "from": ("From where",)}  # fmt: skip


def _facts(sentence: str, spans: Sequence[tuple[int, int, str]]) -> list[_Fact]:
    """The substituted facts of one sentence that a wh-question can ask for (spans are sentence-relative)."""
    replaced = {(s, e) for s, e, _ in spans}
    starts = {s for s, _, _ in spans}

    def is_sub(s: int, e: int) -> bool:
        return any(a >= s and b <= e for a, b in replaced)

    facts: list[_Fact] = []
    month = "|".join(_MONTHS)
    for m in re.finditer(
        rf"\b([Oo]n|[Ii]n) ((?:{month}) \d{{1,2}}, \d{{4}}|\d{{1,2}} (?:{month}) \d{{4}})\b", sentence
    ):
        if is_sub(m.start(2), m.end(2)):
            facts.append(_Fact("date", m.group(2), (m.start(), m.end()), ("On what date", "When"), "on what date"))
    dated = [(f.gap[0], f.gap[1]) for f in facts]
    for m in re.finditer(
        r"\b(in|In|since|Since|by|until|from|during|before|after) (1\d{3}|20\d{2})\b(?![,.]?\d)(?!,? (?:and )?\d)",
        sentence,
    ):
        if m.start(2) in starts and not any(a <= m.start() < b for a, b in dated):
            prep = m.group(1).lower()
            facts.append(_Fact("year", m.group(2), (m.start(), m.end()), _YEAR_PREP[prep], f"{m.group(1)} what year"))
    count_re = (r"(?<![\w.,$£€+-])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)( (?:million|billion|thousand|hundred))?"
                r" ((?:[a-z]+-)?[a-z]{3,}s)\b")  # fmt: skip
    for m in re.finditer(count_re, sentence):
        if m.start(1) in starts and not _YEAR_RE.fullmatch(m.group(1)):
            if re.search(r"\b[A-Z][A-Za-z]*[ -]$", sentence[: m.start()]):
                continue  # "ISO 8859 ...", "Version 3 ...": part of a name
            wh = f"How many{m.group(2) or ''} {m.group(3)}"
            subject_gap = m.start() == 0 and bool(re.match(r" (were|are|have|had)\b", sentence[m.end() :]))
            facts.append(_Fact("count", m.group(1), (m.start(1), m.end()), (wh,), wh.lower(), subject_gap))
    for m in re.finditer(r"\$(\d[\d,.]*\d|\d)(?![.,]\s?\d)( (?:million|billion|trillion|thousand))?", sentence):
        if m.start(1) in starts:
            facts.append(_Fact("amount", m.group(0), (m.start(), m.end()), ("How much",), "how much"))

    # Names: maximal runs of substituted name words ("Ada Krenn"), with what stands before them.
    runs: list[tuple[int, int]] = []
    for s, e, kind in sorted(spans):
        if kind != "name":
            continue
        if runs and sentence[runs[-1][1] : s] == " ":
            runs[-1] = (runs[-1][0], e)
        else:
            runs.append((s, e))
    for s, e in runs:
        glued = e < len(sentence) and (sentence[e].isalnum() or sentence[e] in "'\u2019-")
        if glued or (s and sentence[s - 1] in "-'"):
            continue  # "Krenn's", "Krenn-based": not a clean span
        if re.match(r" (?:[A-Z]|of [A-Z]|and [A-Z])", sentence[e : e + 7]):
            continue  # the name goes on with unsubstituted words: the span is not the whole name
        name = sentence[s:e]
        # The name must end its noun phrase: in "in Python code" the name is a modifier, and removing the
        # phrase would leave "implemented code".
        ends_phrase = re.match(
            r"$|[,.;:)?!]| (?:and|or|in|on|at|for|with|to|from|during|before|after|until|since|by)\b", sentence[e:]
        )
        if len(name.split()) > 4:
            continue  # "Srinivasa Ramanujan Aiyangar ..." invented word by word: too long a gold answer
        before = sentence[:s]
        opens = s == 0 or re.fullmatch(r"The [a-z]{3,}(?: of| called| named)? ", before)  # the sentence's subject
        if not ends_phrase and not (opens and re.match(r" [a-z]", sentence[e:])):
            continue
        if hit := re.search(r"\bby $", before):
            facts.append(_Fact("who", name, (hit.start(), e), ("Who",), "by whom"))
        elif s == 0 and re.match(r" [a-z]", sentence[e:]):
            facts.append(_Fact("who", name, (0, e), ("Who",), "who", subject_gap=True))
        elif hit := re.search(r"\b(?:the|The) ([a-z]{3,})(?: of| called| named)? $", before):
            noun = hit.group(1)
            if noun not in _NOT_NOUNS and not noun.endswith(("ly", "s", "ing")):
                if hit.start() == 0 and re.match(r" [a-z]", sentence[e:]):
                    facts.append(_Fact("which", name, (0, e), (f"Which {noun}", f"What {noun}"), "", True, noun))
                else:
                    asks = (f"Which {noun}", f"What {noun}")
                    facts.append(_Fact("which", name, (hit.start(), e), asks, f"which {noun}", noun=noun))
        elif hit := re.search(r"\b(in|at|near|from) $", before):
            prep = hit.group(1)
            echo = "where" if prep != "from" else "from where"
            facts.append(_Fact("where", name, (hit.start(), e), _PLACE_PREP[prep], echo))
    return facts


def _content(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP and len(w) > 2}


def questions_for(
    text: str,
    spans: Sequence[tuple[int, int, str]],
    rng: random.Random,
    forms_per_fact: int = 2,
    vocabulary: Counter[str] | None = None,
) -> list[tuple[str, str, str]]:
    """``(kind, question, answer)`` for the substituted facts of a substituted passage ``text``.

    ``spans`` are the replaced character spans of ``text`` (``Substitution.spans``). Every answer is a span
    of ``text``; no answer word is in its question; a wh-question is dropped when another sentence of the
    passage with an answer of the same kind shares as many of its content words (not uniquely determined).
    Cloze questions come last in the list ("cloze" kind), one per sentence.
    """
    sentences = [(s, e) for s, e in sentence_spans(text) if 25 <= e - s <= 400]
    per_sentence: list[tuple[str, list[_Fact], list[tuple[int, int, str]]]] = []
    for s, e in sentence_spans(text):
        sentence = text[s:e]
        if (
            "\n" in sentence.strip()
            or sentence.lstrip().startswith(("(", "["))  # asides, stage directions
            or re.search(r"[{}<>=|\\#_\[\]]|\(\w{0,3}\)|::|\$ ", sentence)
            or len(sentence.split()) > 45
        ):
            continue
        if (s, e) not in sentences:
            continue
        local = [(a - s, b - s, k) for a, b, k in spans if a >= s and b <= e]
        if local:
            per_sentence.append((sentence, _facts(sentence, local), local))
    kinds_by_sentence = [
        {k: {f.answer for f in facts if f.kind == k} for k in {f.kind for f in facts}} for _, facts, _ in per_sentence
    ]
    contents = [_content(sentence) for sentence, _, _ in per_sentence]  # once per sentence, not per frame x rival
    out: list[tuple[str, str, str]] = []
    cloze: list[tuple[str, str, str]] = []
    for i, (sentence, facts, local) in enumerate(per_sentence):
        for fact in facts:
            frames = _frames(sentence, fact, vocabulary)
            same_kind_in_sentence = sum(f.kind == fact.kind for f in facts) > 1
            good: list[tuple[str, str]] = []
            for frame, q in frames:
                if same_kind_in_sentence and frame not in {"echo", "active", "by-whom", "direct"}:
                    continue  # a short question could mean either fact of this sentence
                if _leaks(fact.answer, q) or len(q.split()) > 40:
                    continue
                qc = _content(q)
                own = len(qc & contents[i])
                rivals = [
                    j for j, ks in enumerate(kinds_by_sentence)
                    if j != i and fact.kind in ks and ks[fact.kind] - {fact.answer}
                    and len(qc & contents[j]) >= own
                ]  # fmt: skip
                if not rivals:
                    good.append((frame, q))
            rng.shuffle(good)
            seen: set[str] = set()
            picked = 0
            for frame, q in good:
                if frame in seen:
                    continue
                seen.add(frame)
                prefix = rng.choice(_PREFIXES) if frame not in {"echo", "name", "embed"} else ""
                q = prefix + (q[:1].lower() + q[1:] if prefix and not _starts_with_name(q) else q)
                out.append((fact.kind, q, fact.answer))
                picked += 1
                if picked >= forms_per_fact:
                    break
        # One cloze question per sentence, on a name or a number of it.
        choices = [(a, b, k) for a, b, k in local if k in {"name", "number", "year"}]
        if choices:
            a, b, k = rng.choice(choices)
            if k == "name":  # the whole run of name words is the blank
                while True:
                    prev = [(x, y) for x, y, kk in local if kk == "name" and y == a - 1 and sentence[y] == " "]
                    if not prev:
                        break
                    a = prev[0][0]
                while True:
                    nxt = [(x, y) for x, y, kk in local if kk == "name" and x == b + 1 and sentence[b] == " "]
                    if not nxt:
                        break
                    b = nxt[0][1]
            answer = sentence[a:b]
            blank = (sentence[:a] + "____" + sentence[b:]).strip()
            frame = rng.choice(
                ('Fill in the blank: "{b}"', 'Fill in the blank with a {w} from the text: "{b}"',
                 'Complete the sentence from the text: "{b}"', 'What {w} goes in the blank? "{b}"')
            )  # fmt: skip
            q = frame.format(b=blank, w="name" if k == "name" else "number")
            if not _leaks(answer, q) and sum(1 for x in re.finditer(re.escape(answer), text)) >= 1:
                cloze.append(("cloze", q, answer))
    return out + cloze


def _starts_with_name(q: str) -> bool:
    w = q.split(" ", 1)[0]
    return w not in _LOWER_OPENERS and w not in {"In", "On", "When", "What", "Which", "Who", "How", "Where", "Since",
                                                 "By", "Until", "From", "During", "Before", "After", "At", "Near",
                                                 "Name"}  # fmt: skip


def _leaks(answer: str, question: str) -> bool:
    """True when the answer, or one of its words, is in the question."""
    q = normalize_answer(question)
    words = set(q.split())
    a = normalize_answer(answer)
    return not a or f" {a} " in f" {q} " or any(w in words for w in a.split() if len(w) > 1)


# ---------------------------------------------------------------------------------------------------------
# Passages and records


def _bucket(tokens: int, buckets: Sequence[Bucket] = BUCKETS) -> str:
    """The name of the first of ``buckets`` whose highest is at least ``tokens`` (else the last one's)."""
    for name, _, hi, _ in buckets:
        if tokens <= hi:
            return name
    return buckets[-1][0]


@dataclass
class _State:
    """Running counts that steer the length mix and the cloze share (deterministic: one pass, fixed order)."""

    bucket_records: Counter[str] = field(default_factory=Counter)
    records: int = 0
    cloze: int = 0
    numbers: int = 0  # number questions chosen (counted only under CfConfig.number_share)


def _doc_passages(
    doc: Document,
    count: TokenCounter,
    rng: random.Random,
    state: _State,
    max_passages: int,
    buckets: Sequence[Bucket] = BUCKETS,
) -> Iterator[tuple[str, int]]:
    """Passages of whole sentences of ``doc``, (text, tokens): each aims at the length bucket most behind its
    target share among those the rest of the document can still fill."""
    spans = sentence_spans(doc.text)
    if not spans:
        return
    counts = count([doc.text[s:e] for s, e in spans])
    remaining = sum(counts)
    i = 0
    made = 0
    while i < len(spans) and made < max_passages:
        feasible = [b for b in buckets if b[1] <= remaining]
        if not feasible:
            return
        total = state.records + 1
        name, lo, hi, _ = max(feasible, key=lambda b: (b[3] * total - state.bucket_records[b[0]], -b[1]))
        target = rng.randint(lo, hi)
        first, tokens = i, 0
        while i < len(spans) and tokens + counts[i] <= target:
            tokens += counts[i]
            i += 1
        if i == first:  # one sentence longer than the target: skip it
            remaining -= counts[i]
            i += 1
            continue
        remaining -= tokens
        if tokens >= buckets[0][1]:
            made += 1
            yield doc.text[spans[first][0] : spans[i - 1][1]], tokens
        skip = rng.randint(0, 2)  # a gap between passages, so that passages do not tile the document
        remaining -= sum(counts[i : i + skip])
        i += skip


def _choose_capped(
    wh: list[tuple[str, str, str]], limit: int, number_share: float, state: _State
) -> list[tuple[str, str, str]]:
    """Up to ``limit`` of the (shuffled) questions ``wh``: the questions that are not number questions (names:
    who, where, which) first, in their shuffled order (no name kind before another), then number questions while
    they stay under ``number_share`` of all records; returned in ``wh``'s order."""
    order = sorted(range(len(wh)), key=lambda i: (wh[i][0] in NUMBER_KINDS, i))
    picked: list[int] = []
    for i in order:
        if len(picked) >= limit:
            break
        if wh[i][0] in NUMBER_KINDS:
            if state.numbers + 1 > number_share * (state.records + len(picked) + 1):
                continue
            state.numbers += 1
        picked.append(i)
    return [wh[i] for i in sorted(picked)]


def _round_robin_docs(docs: Iterable[Document], seed: int) -> dict[str, list[Document]]:
    """Documents by source, each source in hash order (a prefix of a source is a random sample of it)."""
    by_source: dict[str, list[Document]] = {}
    for d in docs:
        by_source.setdefault(d.source, []).append(d)
    return {
        k: sorted(v, key=lambda d: (split_score(d.doc_id, seed + 7), d.doc_id)) for k, v in sorted(by_source.items())
    }


def make_counterfactual_records(
    docs: Sequence[Document],
    config: CfConfig = CfConfig(),
    count_tokens: TokenCounter = approx_token_counter,
    blocklist: Iterable[str] = (),
    progress: bool = False,
) -> list[CfRecord]:
    """Counterfactual records from ``docs`` (TRAINING documents: the caller's split), sources in turn.

    Deterministic: the same documents, config and counter give the same records in the same order.
    """
    cap, low = word_case_counts(d.text for d in docs)
    vocabulary = low
    names = NameGenerator(set(cap) | set(low), blocklist)
    by_source = _round_robin_docs(docs, config.seed)
    state = _State()
    mrng = random.Random(f"{config.seed}\x00multi")
    pool: deque[tuple[str, int, str]] = deque(maxlen=256)  # recent substituted passages: text, tokens, doc_id
    normalized = lru_cache(maxsize=1024)(normalize_answer)  # pool passages are checked again and again
    shares = {name: share for name, _, _, share in config.buckets}

    def passages_of(source: str) -> Iterator[tuple[Document, str, int, Substitution, random.Random]]:
        for doc, k in ((d, k) for k in range(config.passes) for d in by_source[source]):
            rng = random.Random(f"{config.seed}\x00{doc.doc_id}" + (f"\x00pass{k}" if k else ""))
            passages = _doc_passages(doc, count_tokens, rng, state, config.max_passages_per_doc, config.buckets)
            for text, _ in passages:
                sub = substitute(text, rng, names, cap, low)
                (tokens,) = count_tokens([sub.text])
                yield doc, sub.text, tokens, sub, rng

    streams = {s: passages_of(s) for s in by_source}
    records: list[CfRecord] = []
    limit = config.max_records
    bar = tqdm(total=limit, desc="counterfactual records", unit="rec", disable=not progress)
    per_source: Counter[str] = Counter()
    while streams and (limit is None or len(records) < limit):
        # The source with the fewest records so far goes next: code documentation has fewer facts per passage
        # than speeches, and a plain turn per passage would let the speeches dominate.
        for source in [min(streams, key=lambda k: (per_source[k], k))]:
            item = next(streams[source], None)
            if item is None:
                del streams[source]
                continue
            doc, text, tokens, sub, rng = item
            if config.strict_mix:
                name = _bucket(tokens, config.buckets)
                if state.bucket_records[name] > shares[name] * state.records:
                    continue  # its bucket is over its share: drop the passage (before its questions are made)
            questions = questions_for(text, sub.spans, rng, config.forms_per_fact, vocabulary)
            wh = [q for q in questions if q[0] != "cloze"]
            cloze = [q for q in questions if q[0] == "cloze"]
            rng.shuffle(wh)
            rng.shuffle(cloze)
            if config.number_share is None:
                chosen = wh[: config.max_records_per_passage]
            else:
                chosen = _choose_capped(wh, config.max_records_per_passage, config.number_share, state)
            room = config.max_records_per_passage - len(chosen)
            # Cloze questions only while they stay under their share (they can be made from any name).
            while cloze and room > 0 and state.cloze + 1 <= config.cloze_share * (state.records + len(chosen) + 1):
                chosen.append(cloze.pop())
                state.cloze += 1
                room -= 1
            for kind, prompt, answer in chosen:
                contexts, total, k = [text], tokens, kind
                if mrng.random() < config.multi_doc_share * 1.15 and pool:
                    want = mrng.randint(1, 3)
                    gold = normalize_answer(answer)
                    for _ in range(12):
                        if len(contexts) > want:
                            break
                        other, n, other_id = pool[mrng.randrange(len(pool))]
                        if other_id == doc.doc_id or total + n > config.max_multi_tokens or other in contexts:
                            continue
                        if f" {gold} " in f" {normalized(other)} ":
                            continue
                        contexts.append(other)
                        total += n
                    if len(contexts) > 1:
                        mrng.shuffle(contexts)
                        k = f"multi_{kind}"
                if rng.random() < 0.5:
                    answer_text = answer + "."  # a short sentence; the eval scores "gold appears in the answer"
                else:
                    answer_text = answer
                records.append(CfRecord(contexts, prompt, answer_text, k, doc.source, doc.doc_id, total, tokens))
                per_source[source] += 1
                state.records += 1
                state.bucket_records[_bucket(tokens, config.buckets)] += 1
                bar.update(1)
            pool.append((text, tokens, doc.doc_id))
            if limit is not None and len(records) >= limit:
                break
    bar.close()
    return records[:limit] if limit is not None else records


def training_documents(corpus_dir: str | Path, cache_dir: str | None = None) -> list[Document]:
    """The corpus's TRAINING documents that went into its shards (split "train", status "kept").

    The documents are read again through the sources and ``prepare_documents`` with the corpus manifest's
    config, so the split is the corpus's own; ``docs.jsonl`` then says which of them were kept (not capped).
    """
    corpus_dir = Path(corpus_dir)
    manifest = json.loads((corpus_dir / "manifest.json").read_text(encoding="utf-8"))
    cfg = dict(manifest["config"])
    cfg["sources"] = tuple(cfg["sources"])
    config = CorpusConfig(**cfg, cache_dir=cache_dir)
    kept = {r["doc_id"] for r in read_docs(corpus_dir) if r["split"] == "train" and r["status"] == "kept"}
    heldout = {r["doc_id"] for r in read_docs(corpus_dir) if r["split"] != "train"}
    sources = get_sources(config.sources)
    cache = config.resolved_cache_dir()
    prepared = prepare_documents((d for s in sources for d in s.documents(cache)), config)
    train = [d for d in prepared.train if d.doc_id in kept]
    if any(d.doc_id in heldout for d in train):
        raise ValueError("the corpus split differs from the sources' split: rebuild the corpus")
    return train


def build_counterfactual(
    corpus_dir: str | Path,
    out_path: str | Path,
    config: CfConfig = CfConfig(),
    count_tokens: TokenCounter = approx_token_counter,
    evalsets: str | Path = "evalsets",
    cache_dir: str | None = None,
    progress: bool = False,
) -> list[CfRecord]:
    """Read the corpus's training documents, make the records, write them as JSON lines to ``out_path``."""
    docs = training_documents(corpus_dir, cache_dir)
    records = make_counterfactual_records(docs, config, count_tokens, evalset_words(evalsets), progress)
    write_cf_records(out_path, records)
    return records


def write_cf_records(path: str | Path, records: Iterable[CfRecord]) -> int:
    """One JSON object per line (contexts, prompt, answer, kind, source, doc_id); returns how many."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
            n += 1
    return n


def summary(records: Sequence[CfRecord], buckets: Sequence[Bucket] = BUCKETS) -> dict[str, Counter[str]]:
    """Counts per kind, source and length bucket of ``buckets`` (of the passage holding the answer), for the
    report."""
    return {
        "kind": Counter(r.kind for r in records),
        "source": Counter(r.source for r in records),
        "bucket": Counter(_bucket(r.passage_tokens, buckets) for r in records),
    }
