"""Part (b): passages of invented facts in ten genres, from this folder's own frames and names.

A passage is a title plus sections; each section is about one invented topic (a town, a tool, an agenda item
...) and states several facts in frames drawn at random, plus filler sentences. Long passages hold many
sections, so the same kind of fact (a founding year, a person, a count) appears several times for different
topics: a question names its topic and must be answered by reading, not by guessing the only year present.
Every gold answer is the slot value as written in the passage.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from .names import NameBank

__all__ = ["GENRES", "GenPassage", "generate_passage"]

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")  # fmt: skip

# A frame: (sentence variants, [(question variants, slot, kind), ...]). Slots: {T} topic, {P}/{Q} persons,
# {L} place, {O} organisation, {Y} year, {D} date, {N} number, {K} invented item name, {C} code.
Frame = tuple[tuple[str, ...], tuple[tuple[tuple[str, ...], str, str], ...]]


@dataclass
class Genre:
    """A genre: a title pattern, a topic factory, frames and filler sentences."""

    name: str
    title: str
    topic: Callable[[NameBank, random.Random], str]
    frames: tuple[Frame, ...]
    filler: tuple[str, ...]
    heading: str = "{T}"


@dataclass
class GenPassage:
    """A generated passage and its questions as (question, answer, kind)."""

    genre: str
    text: str
    facts: list[tuple[str, str, str]]


def _w(b: NameBank, r: random.Random) -> str:
    return b.word(r)


def _town(b: NameBank, r: random.Random) -> str:
    return b.word(r)


def _tool(b: NameBank, r: random.Random) -> str:
    return b.word(r).lower()


def _item(b: NameBank, r: random.Random) -> str:
    return f"the {b.word(r)} {r.choice(('migration', 'archive review', 'budget', 'relocation', 'survey', 'audit'))}"


def _product(b: NameBank, r: random.Random) -> str:
    return f"{b.word(r)} {r.choice('ABCDEFGHKMRTVX')}{r.randint(2, 9)}{r.randint(0, 9)}"


ENCYCLOPEDIA = Genre(
    "encyclopedia",
    "{T} (settlement)",
    _town,
    (
        (
            ("{T} was founded in {Y} by {P}.", "The settlement of {T} was established by {P} in {Y}."),
            (
                (("In what year was {T} founded?", "When was {T} established?"), "Y", "when"),
                (("Who founded {T}?", "Who established the settlement of {T}?"), "P", "who"),
            ),
        ),
        (
            (
                "{T} lies on the {K} river, in the province of {L}.",
                "Situated on the {K} river, {T} belongs to the province of {L}.",
            ),
            (
                (("On which river does {T} lie?",), "K", "which"),
                (("In which province is {T}?", "Where is {T} located?"), "L", "where"),
            ),
        ),
        (
            ("At the last census {T} had {N} inhabitants.", "The population of {T} was counted at {N} residents."),
            (
                (
                    ("How many inhabitants did {T} have at the last census?", "How many residents does {T} have?"),
                    "N",
                    "how_many",
                ),
            ),
        ),
        (
            ("The main industry of {T} is the weaving of {K} cloth.", "{T} is known above all for its {K} cloth."),
            ((("What kind of cloth is {T} known for?",), "K", "what"),),
        ),
        (
            ("The town hall of {T} was designed by the architect {P} and completed on {D}.",),
            (
                (("Who designed the town hall of {T}?",), "P", "who"),
                (("When was the town hall of {T} completed?",), "D", "when"),
            ),
        ),
        (("{T} is twinned with the town of {L}.",), ((("Which town is {T} twinned with?",), "L", "which"),)),
    ),
    (
        "The climate is mild, with wet winters.",
        "Several footpaths cross the surrounding hills.",
        "Its market square is paved with local stone.",
        "Local records are kept in the parish library.",
    ),
)

NEWS = Genre(
    "news",
    "{T} council approves new plan",
    _town,
    (
        (
            (
                "Officials in {T} said on {D} that the new bridge would open within a year.",
                "The council of {T} announced on {D} that work on the bridge would begin soon.",
            ),
            ((("On what date did officials in {T} make their announcement?",), "D", "when"),),
        ),
        (
            ("Mayor {P} told reporters that the project in {T} would cost {N} thousand crowns.",),
            (
                (("Who is the mayor of {T}?", "Which mayor spoke to reporters about {T}?"), "P", "who"),
                (("How many thousand crowns will the project in {T} cost?",), "N", "how_many"),
            ),
        ),
        (
            ("About {N} people attended the public meeting in {T}.",),
            ((("How many people attended the public meeting in {T}?",), "N", "how_many"),),
        ),
        (
            ("The contract for {T} went to the {O}, a firm based in {L}.",),
            (
                (("Which firm won the contract for {T}?",), "O", "which"),
                (("Where is the firm that won the contract for {T} based?",), "L", "where"),
            ),
        ),
        (
            ("Opposition leader {P} called the plan for {T} a waste of money.",),
            ((("Who called the plan for {T} a waste of money?",), "P", "who"),),
        ),
        (
            ("The first stage in {T} is expected to finish in {Y}.",),
            ((("In what year is the first stage in {T} expected to finish?",), "Y", "when"),),
        ),
    ),
    (
        "Residents have mixed feelings about the plan.",
        "The vote passed after a long debate.",
        "Further details will be published next month.",
        "Traffic is expected to be diverted during the works.",
    ),
    "News from {T}",
)

MANUAL = Genre(
    "tool_manual",
    "{T}(1) user manual",
    _tool,
    (
        (
            (
                "The {T} command copies records between archives.",
                "Use {T} to copy records from one archive to another.",
            ),
            (),
        ),
        (
            (
                "The option --{K} sets the block size; its default is {N} kilobytes.",
                "Pass --{K} to change the block size, which is {N} kilobytes by default.",
            ),
            (
                (("Which option of {T} sets the block size?",), "K", "which"),
                (("What is the default block size of {T}, in kilobytes?",), "N", "how_many"),
            ),
        ),
        (
            ("By default {T} retries a failed transfer {S} times.",),
            ((("How many times does {T} retry a failed transfer by default?",), "S", "how_many"),),
        ),
        (
            ("{T} reads its settings from the file {C}.conf in the home directory.",),
            ((("What file does {T} read its settings from?",), "C.conf", "what"),),
        ),
        (
            ("{T} was written by {P} and first released in {Y}.",),
            ((("Who wrote {T}?",), "P", "who"), (("In what year was {T} first released?",), "Y", "when")),
        ),
        (
            ("When the environment variable {C}_HOME is set, {T} stores its cache there.",),
            ((("Which environment variable controls where {T} stores its cache?",), "C_HOME", "which"),),
        ),
        (
            ("{T} exits with status {S} when the archive is locked.",),
            ((("With which exit status does {T} stop when the archive is locked?",), "S", "which"),),
        ),
    ),
    (
        "Options may be given in any order.",
        "Run the command with --help for a short summary.",
        "Long options may be abbreviated when unambiguous.",
        "All messages are written to standard error.",
    ),
    "NAME {T}",
)

MEETING = Genre(
    "meeting_notes",
    "Minutes: {T}",
    _item,
    (
        (("Item: {T}. {P} presented the status of {T}.",), ((("Who presented the status of {T}?",), "P", "who"),)),
        (
            ("The group agreed to finish {T} by {D}.", "A deadline of {D} was set for {T}."),
            ((("By what date should {T} be finished?", "What deadline was set for {T}?"), "D", "when"),),
        ),
        (
            ("Action: {Q} will contact the {O} about {T}.",),
            (
                (("Who will contact the {O} about {T}?",), "Q", "who"),
                (("Which organisation will be contacted about {T}?",), "O", "which"),
            ),
        ),
        (
            ("The budget for {T} was fixed at {N} crowns.",),
            ((("How many crowns were allocated to {T}?",), "N", "how_many"),),
        ),
        (
            ("The work on {T} will take place in the {K} building.",),
            ((("Where will the work on {T} take place?",), "K building", "where"),),
        ),
    ),
    (
        "No objections were raised.",
        "The discussion will continue at the next meeting.",
        "Minutes were approved without changes.",
        "Questions may be sent to the secretary.",
    ),
    "Agenda item: {T}",
)

BIOGRAPHY = Genre(
    "biography",
    "{T}: a life",
    lambda b, r: b.person(r),
    (
        (
            ("{T} was born on {D} in the village of {L}.", "Born in {L} on {D}, {T} grew up on a farm."),
            ((("When was {T} born?",), "D", "when"), (("Where was {T} born?",), "L", "where")),
        ),
        (
            ("{T} studied botany under {P} at the {O}.",),
            (
                (("Under whom did {T} study botany?",), "P", "who"),
                (("At which institution did {T} study botany?",), "O", "which"),
            ),
        ),
        (
            ("In {Y} {T} published a study of the {K} fern.",),
            (
                (("In what year did {T} publish a study of the {K} fern?",), "Y", "when"),
                (("Which fern did {T} study?",), "K", "which"),
            ),
        ),
        (
            ("{T} collected {N} plant specimens during the expedition.",),
            ((("How many plant specimens did {T} collect?",), "N", "how_many"),),
        ),
        (("{T} married {P} and later settled in {L}.",), ((("Whom did {T} marry?",), "P", "who"),)),
    ),
    (
        "Friends remembered a patient and careful worker.",
        "Letters from this period survive in private hands.",
        "The work received little notice at first.",
        "Later years were spent teaching.",
    ),
)

PRODUCT = Genre(
    "product_sheet",
    "{T} product sheet",
    _product,
    (
        (
            ("The {T} weighs {N} grams.", "With a weight of {N} grams, the {T} is easy to carry."),
            ((("How many grams does the {T} weigh?",), "N", "how_many"),),
        ),
        (
            ("The {T} is made by the {O} in {L}.",),
            ((("Which company makes the {T}?",), "O", "which"), (("Where is the {T} made?",), "L", "where")),
        ),
        (
            ("The battery of the {T} lasts {S} hours.",),
            ((("How many hours does the battery of the {T} last?",), "S", "how_many"),),
        ),
        (("The {T} went on sale on {D}.",), ((("When did the {T} go on sale?",), "D", "when"),)),
        (
            ("The {T} comes with a {K} charging cable.",),
            ((("What kind of charging cable comes with the {T}?",), "K", "what"),),
        ),
        (("The {T} was designed by {P}.",), ((("Who designed the {T}?",), "P", "who"),)),
    ),
    (
        "The casing resists splashes of water.",
        "Spare parts are available from dealers.",
        "The device should be stored in a dry place.",
        "A warranty card is included.",
    ),
    "Model: {T}",
)

NOTICE = Genre(
    "email_notice",
    "Notice: {T} office",
    _town,
    (
        (
            ("Dear colleagues, the {T} office will be closed on {D}.",),
            ((("On what date will the {T} office be closed?",), "D", "when"),),
        ),
        (
            ("Please send questions about the {T} office to {P}.",),
            ((("To whom should questions about the {T} office be sent?",), "P", "who"),),
        ),
        (
            ("During the closure, the {T} staff will work from the {K} annex in {L}.",),
            ((("Where will the {T} staff work during the closure?",), "K annex", "where"),),
        ),
        (
            ("The {T} office serves {N} customers a week.",),
            ((("How many customers a week does the {T} office serve?",), "N", "how_many"),),
        ),
        (
            ("The {T} office reopens under its new manager, {Q}.",),
            ((("Who is the new manager of the {T} office?",), "Q", "who"),),
        ),
    ),
    (
        "Thank you for your patience.",
        "We apologise for any inconvenience.",
        "Kind regards, the facilities team.",
        "Parking will not be affected.",
    ),
    "Regarding the {T} office",
)

FAQ = Genre(
    "faq",
    "Frequently asked questions about the {T} library",
    _town,
    (
        (
            ("Q: When does the {T} library open? A: The {T} library opens at {H} o'clock.",),
            ((("At what hour does the {T} library open?",), "H", "when"),),
        ),
        (
            ("Q: How many books may I borrow from the {T} library? A: Members may borrow {S} books at a time.",),
            ((("How many books may members borrow at a time from the {T} library?",), "S", "how_many"),),
        ),
        (
            ("Q: Who runs the {T} library? A: The {T} library is run by {P}.",),
            ((("Who runs the {T} library?",), "P", "who"),),
        ),
        (
            ("Q: Where is the {T} library? A: It is on {K} Street in {L}.",),
            ((("On which street is the {T} library?",), "K Street", "which"),),
        ),
        (
            ("Q: When was the {T} library opened? A: It opened in {Y}.",),
            ((("In what year did the {T} library open?",), "Y", "when"),),
        ),
    ),
    (
        "Q: Is there a fee? A: Membership is free.",
        "Q: Can I print documents? A: Yes, at the front desk.",
        "Q: Are pets allowed? A: Only guide dogs are allowed.",
    ),
    "Section: the {T} library",
)

TRAVEL = Genre(
    "travel_guide",
    "Travel guide: {T}",
    _town,
    (
        (
            ("The ferry to {T} leaves from {L} every morning.",),
            ((("From where does the ferry to {T} leave?",), "L", "where"),),
        ),
        (
            ("The crossing to {T} takes {N} minutes.",),
            ((("How many minutes does the crossing to {T} take?",), "N", "how_many"),),
        ),
        (("The best-known dish of {T} is a stew called {K}.",), ((("What is the stew of {T} called?",), "K", "what"),)),
        (
            ("The lighthouse of {T} was built in {Y}.",),
            ((("In what year was the lighthouse of {T} built?",), "Y", "when"),),
        ),
        (
            ("Visitors to {T} often stay at the guest house run by {P}.",),
            ((("Who runs the guest house in {T}?",), "P", "who"),),
        ),
    ),
    ("Bring warm clothes, even in summer.", "The paths can be muddy after rain.", "Shops close early on Sundays."),
)

INCIDENT = Genre(
    "incident_report",
    "Incident report: {T} plant",
    _town,
    (
        (
            ("At the {T} plant, a pump failure was reported on {D}.",),
            ((("On what date was the pump failure at the {T} plant reported?",), "D", "when"),),
        ),
        (
            ("The failure at the {T} plant was found by the technician {P}.",),
            ((("Who found the failure at the {T} plant?",), "P", "who"),),
        ),
        (
            ("Production at the {T} plant stopped for {S} hours.",),
            ((("For how many hours did production stop at the {T} plant?",), "S", "how_many"),),
        ),
        (
            ("The faulty part at the {T} plant came from the {O}.",),
            ((("Which supplier provided the faulty part at the {T} plant?",), "O", "which"),),
        ),
    ),
    ("No one was injured.", "The cause is still being investigated.", "A follow-up review is planned."),
)

GENRES: dict[str, Genre] = {
    g.name: g for g in (ENCYCLOPEDIA, NEWS, MANUAL, MEETING, BIOGRAPHY, PRODUCT, NOTICE, FAQ, TRAVEL, INCIDENT)
}

_ORG_KINDS = ("Institute", "Foundation", "Works", "Society", "Company", "Trust", "Cooperative", "Guild")


def _slot(kind: str, bank: NameBank, rng: random.Random) -> str:
    """A fresh value for a slot letter."""
    if kind in "PQ":
        return bank.person(rng)
    if kind in "LK":
        return bank.word(rng)
    if kind == "O":
        return f"{bank.word(rng)} {rng.choice(_ORG_KINDS)}"
    if kind == "Y":
        return str(rng.randint(1825, 1995))
    if kind == "D":
        return f"{rng.randint(2, 28)} {rng.choice(_MONTHS)} {rng.randint(1830, 1995)}"
    if kind == "N":
        return str(rng.choice((rng.randint(13, 99), rng.randint(101, 999), rng.randint(1001, 9999))))
    if kind == "H":
        return str(rng.randint(6, 11))
    if kind == "S":
        return str(rng.randint(3, 48))
    if kind == "C":
        return bank.word(rng).upper()
    raise KeyError(kind)


def _fill(template: str, values: dict[str, str]) -> str:
    return re.sub(r"\{([A-Z])\}", lambda m: values[m.group(1)], template)


def generate_passage(
    genre: str, bank: NameBank, rng: random.Random, target_tokens: int, count: Callable[[str], int]
) -> GenPassage:
    """One passage of ``genre`` of about ``target_tokens`` tokens (sections are added until it is reached)."""
    g = GENRES[genre]
    topics: list[str] = []
    paragraphs: list[str] = []
    facts: list[tuple[str, str, str]] = []
    title = ""
    while True:
        topic = g.topic(bank, rng)
        if not title:
            title = _fill(g.title, {"T": topic})
            title = title[0].upper() + title[1:]
        topics.append(topic)
        frames = rng.sample(g.frames, k=min(len(g.frames), rng.randint(3, 5)))
        sentences: list[str] = []
        section_facts: list[tuple[str, str, str]] = []
        for variants, questions in frames:
            values = {"T": topic}
            for letter in sorted(set(re.findall(r"\{([A-Z])\}", " ".join(variants)))):
                if letter != "T":
                    values[letter] = _slot(letter, bank, rng)
            sentence = _fill(rng.choice(variants), values)
            sentences.append(sentence[0].upper() + sentence[1:])
            for qvariants, slot, kind in questions:
                # a composite gold such as "K building" or "C.conf" is the slot value plus literal text
                answer = values[slot[0]] + slot[1:]
                q = _fill(rng.choice(qvariants), values)
                section_facts.append((q[0].upper() + q[1:], answer, kind))
            if rng.random() < 0.5:
                sentences.append(rng.choice(g.filler))
        heading = _fill(g.heading, {"T": topic})
        paragraphs.append(heading[0].upper() + heading[1:] + "\n" + " ".join(sentences))
        facts.extend(section_facts)
        text = title + "\n\n" + "\n\n".join(paragraphs)
        if count(text) >= target_tokens or len(topics) >= 40:
            break
    while count(text) > 1500 and len(paragraphs) > 1:  # keep the upper bound: drop the last section
        paragraphs.pop()
        text = title + "\n\n" + "\n\n".join(paragraphs)
    facts = [f for f in facts if f[1] in text and _topic_in_text(f[0], text)]
    return GenPassage(genre, text, facts)


def _topic_in_text(question: str, text: str) -> bool:
    """False for a question about a section that was dropped (its capitalised names are not in the text)."""
    return all(w in text for w in re.findall(r"\b[A-Z][a-z]{4,}\b", question) if w not in _COMMON)


_COMMON = frozenset({"Which", "Where", "Whom", "What", "Under", "During", "Please"})
