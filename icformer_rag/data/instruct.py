"""Instruction data made from the corpus documents, with no data-set hub.

No question-answering data set with passages ships in any reachable registry, so records are made
from the texts themselves:

- templated tasks on a passage: summarize, give a title, keywords, continue the text, "what does the
  text say about <entity>?";
- extractive questions whose gold answer is a span of the passage: a sentence holding a year, a date,
  a count or a "by <Name>" phrase becomes a wh-question ("... founded in what year?" -> "1723"), and
  one holding a name becomes a fill-in-the-blank question;
- self-distillation: ``distill`` fills the answers that have no gold text (summaries, keywords …) with
  the frozen LLM's own answer given the full passage; the caller passes the generation function.

Held-out documents give the QA dev set (``build_qa_dev``), training documents the training records.
"""

from __future__ import annotations

import json
import random
import re
import string
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..key_terms import NAME, names
from .corpus import split_score
from .sources import Document

__all__ = [
    "InstructConfig",
    "InstructRecord",
    "TokenCounter",
    "answer_in",
    "approx_token_counter",
    "build_instruct_train",
    "build_qa_dev",
    "distill",
    "extractive_questions",
    "make_records",
    "normalize_answer",
    "passages",
    "read_records",
    "sentence_spans",
    "tokenizer_counter",
    "write_records",
]

TokenCounter = Callable[[Sequence[str]], list[int]]
"""Token counts of a batch of texts."""

QA_KINDS = ("qa_year", "qa_date", "qa_number", "qa_who", "qa_cloze")
TEMPLATE_KINDS = ("summarize", "title", "keywords", "continue", "about")


@dataclass(frozen=True)
class InstructRecord:
    """One instruction example: answer ``prompt`` from ``context``. ``answer`` None = to be distilled."""

    context: str
    prompt: str
    answer: str | None
    kind: str
    doc_id: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InstructRecord:
        return cls(**{k: data[k] for k in ("context", "prompt", "answer", "kind", "doc_id")})


@dataclass(frozen=True)
class InstructConfig:
    """How records are made from documents."""

    seed: int = 0
    """Seeds every random choice; each document gets its own generator, so records are stable per document."""
    max_context_tokens: int = 450
    """Passages are cut at sentence boundaries to at most about this many tokens."""
    min_context_tokens: int = 40
    """Shorter passages are not used."""
    passages_per_doc: int = 2
    """At most this many passages of one document are used."""
    questions_per_passage: int = 2
    """At most this many extractive questions per passage."""
    continue_sentences: int = 2
    """Sentences the "continue" task asks for (its answer is the real next sentences)."""
    max_records: int | None = 20_000
    """Stop after this many records (documents are visited round-robin over sources, in hash order)."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_context_tokens <= self.max_context_tokens:
            raise ValueError("need 1 <= min_context_tokens <= max_context_tokens")
        for name in ("passages_per_doc", "continue_sentences"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.questions_per_passage < 0:
            raise ValueError("questions_per_passage must be >= 0")
        if self.max_records is not None and self.max_records < 1:
            raise ValueError("max_records must be None or >= 1")


# ---------------------------------------------------------------------------------------------------------
# Answer matching (used by the QA evaluation)

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase, no punctuation, no articles (a/an/the), single spaces (as in SQuAD's evaluation).

    Punctuation is removed, not replaced by a space, so "3,000" and "3000" match.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch for ch in text if ch not in string.punctuation and not unicodedata.category(ch).startswith("P"))
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_in(gold: str, generated: str) -> bool:
    """True when the normalized gold answer occurs in the normalized generated text as whole words."""
    g = normalize_answer(gold)
    return bool(g) and f" {g} " in f" {normalize_answer(generated)} "


# ---------------------------------------------------------------------------------------------------------
# Sentences and passages

# A sentence ends at . ! ? (plus closing quotes) before a capital letter; not before a digit, which
# after a full stop is more often "Op. 125" or "No. 9" than a new sentence.
_BOUNDARY = re.compile(r"([.!?][\"'\u201d\u2019)\]]*)\s+(?=[\"'\u201c\u2018(\[]?[A-Z])")
_ABBREVIATION = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|Gen|Col|Lt|Capt|Gov|Rev|Hon|Sen|Rep|vs|etc|No|Vol|Fig|Inc|Ltd|Co|Mt"
    r"|Op|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|e\.g|i\.e|U\.S|U\.K|a\.m|p\.m)|\b[A-Z])\.$"
)
_PARAGRAPH = re.compile(r"\S(?:.*?\S)?(?=[ \t]*\n[ \t]*\n|\s*$)", re.S)


def sentence_spans(text: str, max_chars: int = 800) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text``, never crossing a paragraph (blank line).

    Abbreviations ("Mr.", "U.S.", initials) do not end a sentence. A "sentence" longer than ``max_chars``
    (verse without full stops, code) is cut at line breaks.
    """
    spans: list[tuple[int, int]] = []
    for para in _PARAGRAPH.finditer(text):
        start = para.start()
        pieces: list[tuple[int, int]] = []
        for m in _BOUNDARY.finditer(text, para.start(), para.end()):
            if _ABBREVIATION.search(text, max(start, m.end(1) - 8), m.end(1)):
                continue
            pieces.append((start, m.end(1)))
            start = m.end()
        pieces.append((start, para.end()))
        for s, e in pieces:
            spans.extend(_split_long(text, s, e, max_chars))
    return spans


def _split_long(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    if end - start <= max_chars:
        return [(start, end)]
    out: list[tuple[int, int]] = []
    piece_start = start
    for m in re.finditer(r"\n", text[start:end]):
        cut = start + m.start()
        if cut - piece_start >= max_chars // 2:
            out.append((piece_start, cut))
            piece_start = cut + 1
    out.append((piece_start, end))
    return [(s, e) for s, e in out if text[s:e].strip()]


def approx_token_counter(texts: Sequence[str]) -> list[int]:
    """About four characters per token: for tests and for building without a tokenizer."""
    return [len(t) // 4 + 1 for t in texts]


def tokenizer_counter(tokenizer: Any) -> TokenCounter:
    """A TokenCounter from a Hugging Face tokenizer (one batched call per document)."""

    def count(texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        enc = tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False, verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    return count


@dataclass(frozen=True)
class Passage:
    """A run of whole sentences of one document: ``text[sentences[first][0]:sentences[last][1]]``."""

    first: int
    last: int  # inclusive
    text: str


def passages(
    text: str, spans: Sequence[tuple[int, int]], counts: Sequence[int], max_tokens: int, min_tokens: int
) -> list[Passage]:
    """Consecutive sentences packed greedily into passages of at most ``max_tokens`` (summed per sentence).

    A sentence longer than ``max_tokens`` on its own ends the passage before it and is skipped.
    """
    out: list[Passage] = []
    first, total = 0, 0

    def close(last: int) -> None:
        if last >= first and total >= min_tokens:
            out.append(Passage(first, last, text[spans[first][0] : spans[last][1]]))

    for i, n in enumerate(counts):
        if n > max_tokens:
            close(i - 1)
            first, total = i + 1, 0
            continue
        if total + n > max_tokens:
            close(i - 1)
            first, total = i, 0
        total += n
    close(len(counts) - 1)
    return out


# ---------------------------------------------------------------------------------------------------------
# Extractive questions

_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_DATE = re.compile(rf"\b(on|On) ((?:{_MONTHS}) \d{{1,2}}, \d{{4}}|\d{{1,2}} (?:{_MONTHS}) \d{{4}})\b")
_YEAR = re.compile(
    r"\b(in|In|since|Since|by|until|from|From|during|During|before|Before|after|After)"
    r" ((?:1[0-9]|20)\d{2})\b(?![,.]?\d)"
)
_COUNT = re.compile(
    r"(?<![\w.,$£€-])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)( (?:million|billion|thousand|hundred))?"
    r" ((?:[a-z]+-)?[a-z]{3,}s)\b"
)
_BY_NAME = re.compile(rf"\b(by) ({NAME.pattern})")


def _as_question(sentence: str, start: int, end: int, wh: str) -> str:
    """The sentence with [start, end) replaced by a wh-phrase and a question mark ("echo question")."""
    q = (sentence[:start] + wh + sentence[end:]).strip()
    q = re.sub(r"[\s.!?;:,\"'\u201d\u2019]+$", "", q).lstrip("\"'\u201c\u2018 ")
    return q[:1].upper() + q[1:] + "?"


def extractive_questions(sentence: str) -> list[tuple[str, str, str]]:
    """Questions answered by a span of ``sentence``: ``[(kind, question, answer), ...]``.

    An answer never occurs in its own question. Example: "The town was founded in 1723 by Ada Krenn."
    gives ("qa_year", "The town was founded in what year by Ada Krenn?", "1723") and
    ("qa_who", "The town was founded in 1723 by whom?", "Ada Krenn").
    """
    out: list[tuple[str, str, str]] = []
    for m in _DATE.finditer(sentence):
        out.append(("qa_date", _as_question(sentence, m.start(), m.end(), f"{m.group(1)} what date"), m.group(2)))
    dated = {m.group(2) for m in _DATE.finditer(sentence)}
    for m in _YEAR.finditer(sentence):
        if any(m.group(2) in d for d in dated):
            continue
        out.append(("qa_year", _as_question(sentence, m.start(), m.end(), f"{m.group(1)} what year"), m.group(2)))
    for m in _COUNT.finditer(sentence):
        number = m.group(1)
        if re.fullmatch(r"1\d{3}|20\d{2}", number):  # a year, not a count
            continue
        if re.search(r"\b[A-Z][A-Za-z]*[ -]$", sentence[: m.start()]):  # "ISO 8859", "UNIX 98": a name
            continue
        wh = f"how many{m.group(2) or ''} {m.group(3)}"
        out.append(("qa_number", _as_question(sentence, m.start(), m.end(), wh), number))
    for m in _BY_NAME.finditer(sentence):
        found = names(m.group(2))
        if found and m.group(2).startswith(found[0]):
            s = m.start(2)
            out.append(("qa_who", _as_question(sentence, m.start(), s + len(found[0]), "by whom"), found[0]))
    for name in names(sentence):
        at = sentence.find(name)
        # A single capitalised word counts as a name only after a lower-case word: at the start of a
        # sentence or after "-a, --all" it is usually just an opener ("Display", "Change").
        if " " in name or re.search(r"\b[a-z]+,? $", sentence[:at]):
            blank = sentence[:at] + "____" + sentence[at + len(name) :]
            q = f'Fill in the blank with a name from the text: "{blank.strip()}"'
            out.append(("qa_cloze", q, name))
            break
    return [(k, q, a) for k, q, a in out if normalize_answer(a) and not answer_in(a, q)]


# ---------------------------------------------------------------------------------------------------------
# Records

_PROMPTS = {
    "summarize": ("Summarize the text in two or three sentences.", "Write a short summary of the text.",
                  "What is the text about? Answer in a few sentences."),
    "title": ("Give the text a short title.", "What would be a good title for this text?",
              "Suggest a title for the text."),
    "keywords": ("List five keywords for the text, separated by commas.",
                 "Which key terms does the text use? Give up to five, separated by commas."),
    "continue": ("Continue the text with the next {n} sentences.",
                 "What comes next? Write the next {n} sentences."),
    "about": ("What does the text say about {entity}?",
              "According to the text, what do we learn about {entity}?"),
}  # fmt: skip
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}


def _doc_records(
    doc: Document, config: InstructConfig, count: TokenCounter, extractive_only: bool
) -> list[InstructRecord]:
    rng = random.Random(f"{config.seed}\x00{doc.doc_id}")
    spans = sentence_spans(doc.text)
    if not spans:
        return []
    counts = count([doc.text[s:e] for s, e in spans])
    candidates = passages(doc.text, spans, counts, config.max_context_tokens, config.min_context_tokens)
    if not candidates:
        return []
    # The first passage carries the document's opening, the most informative part of wiki articles.
    chosen = [
        candidates[0],
        *rng.sample(candidates[1:], min(len(candidates) - 1, config.passages_per_doc - 1)),
    ]
    records: list[InstructRecord] = []
    for p in chosen:
        questions: list[tuple[str, str, str]] = []
        for s, e in spans[p.first : p.last + 1]:
            sentence = doc.text[s:e]
            if 30 <= len(sentence) <= 400:
                questions.extend(extractive_questions(sentence))
        # Wh-questions when the passage has any, else one cloze question: cloze questions can be made
        # from any name and would otherwise crowd out the rest.
        rng.shuffle(questions)
        wh = [q for q in questions if q[0] != "qa_cloze"]
        questions = wh or [q for q in questions if q[0] == "qa_cloze"][:1]
        for kind, question, gold in questions[: config.questions_per_passage]:
            if gold in p.text:
                records.append(InstructRecord(p.text, question, gold, kind, doc.doc_id))
        if extractive_only:
            continue
        kind = rng.choice(TEMPLATE_KINDS)
        n = config.continue_sentences
        if kind == "continue" and p.last + n >= len(spans):
            kind = "summarize"
        entities = names(p.text)
        if kind == "about" and not entities:
            kind = "keywords"
        if kind == "title" and not doc.title.strip():
            kind = "summarize"
        prompt = rng.choice(_PROMPTS[kind]).format(
            n=_NUMBER_WORDS.get(n, str(n)), entity=entities[0] if entities else ""
        )
        answer: str | None = None
        if kind == "title":
            answer = doc.title
        elif kind == "continue":
            answer = doc.text[spans[p.last + 1][0] : spans[p.last + n][1]]
        records.append(InstructRecord(p.text, prompt, answer, kind, doc.doc_id))
    return records


def _round_robin(docs: Iterable[Document], seed: int) -> list[Document]:
    """Documents interleaved over sources, each source in hash order: every prefix mixes all sources."""
    by_source: dict[str, list[Document]] = {}
    for d in docs:
        by_source.setdefault(d.source, []).append(d)
    queues = [
        sorted(v, key=lambda d: (split_score(d.doc_id, seed + 1), d.doc_id)) for _, v in sorted(by_source.items())
    ]
    out: list[Document] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


def make_records(
    docs: Iterable[Document],
    config: InstructConfig,
    count_tokens: TokenCounter = approx_token_counter,
    extractive_only: bool = False,
    max_per_doc: int | None = None,
    progress: bool = False,
) -> list[InstructRecord]:
    """Records from ``docs`` (templated tasks and extractive questions, or only the latter)."""
    ordered = _round_robin(docs, config.seed)
    records: list[InstructRecord] = []
    for doc in tqdm(ordered, desc="instruct records", unit="doc", disable=not progress):
        made = _doc_records(doc, config, count_tokens, extractive_only)
        records.extend(made[:max_per_doc])
        if config.max_records is not None and len(records) >= config.max_records:
            return records[: config.max_records]
    return records


def write_records(path: str | Path, records: Iterable[InstructRecord]) -> int:
    """Write records as JSON lines; returns how many."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
            n += 1
    return n


def read_records(path: str | Path) -> list[InstructRecord]:
    """Read records written by ``write_records``."""
    with open(path, encoding="utf-8") as f:
        return [InstructRecord.from_json(json.loads(line)) for line in f if line.strip()]


def build_qa_dev(
    heldout_docs: Iterable[Document],
    out_path: str | Path,
    config: InstructConfig,
    count_tokens: TokenCounter = approx_token_counter,
    max_per_doc: int = 4,
) -> list[InstructRecord]:
    """The QA dev set: extractive questions on HELD-OUT documents only, written to ``out_path``.

    Every gold answer is short and occurs literally in its context, so accuracy can be scored with
    ``answer_in`` against the full-text, digest and no-context answers alike.
    """
    records = make_records(heldout_docs, config, count_tokens, extractive_only=True, max_per_doc=max_per_doc)
    records = [r for r in records if r.answer and r.answer in r.context and len(r.answer.split()) <= 8]
    write_records(out_path, records)
    return records


def build_instruct_train(
    train_docs: Iterable[Document],
    out_path: str | Path,
    config: InstructConfig,
    count_tokens: TokenCounter = approx_token_counter,
    progress: bool = False,
) -> list[InstructRecord]:
    """Training records from training documents, written to ``out_path`` (answers None = to distill)."""
    records = make_records(train_docs, config, count_tokens, progress=progress)
    write_records(out_path, records)
    return records


def distill(
    records: Sequence[InstructRecord],
    generate: Callable[[list[str], list[str]], list[str]],
    batch_size: int = 16,
    overwrite: bool = False,
    progress: bool = False,
) -> list[InstructRecord]:
    """Fill missing answers with the frozen LLM's own full-context answers (self-distillation).

    ``generate(contexts, prompts)`` returns one answer per pair; the caller builds it around the LLM
    (chat template, greedy decoding). Records that already have an answer keep it unless ``overwrite``.
    A record whose generated answer is empty is dropped. Order is kept.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    todo = [i for i, r in enumerate(records) if overwrite or r.answer is None]
    answers: dict[int, str] = {}
    steps = range(0, len(todo), batch_size)
    for start in tqdm(steps, desc="distilling", unit="batch", disable=not progress):
        batch = todo[start : start + batch_size]
        generated = generate([records[i].context for i in batch], [records[i].prompt for i in batch])
        if len(generated) != len(batch):
            raise ValueError(f"generate returned {len(generated)} answers for {len(batch)} prompts")
        answers.update(zip(batch, (g.strip() for g in generated), strict=True))
    out = []
    for i, r in enumerate(records):
        if i in answers:
            if answers[i]:
                out.append(replace(r, answer=answers[i]))
        else:
            out.append(r)
    return out
