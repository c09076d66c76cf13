"""Key terms: the names-and-numbers line read beside digests."""

from __future__ import annotations

import pytest

from icformer_rag.key_terms import (
    KEY_TERMS_PREFIX,
    MAX_KEY_TERMS,
    append_key_terms,
    key_terms,
    key_terms_line,
    names,
    numbers,
    with_key_terms,
)

TEXT = (
    "The town of Velmora was founded in 1723 by Ada Krenn, a glassmaker. In March 1750 it had 2,400 people. "
    "Ada Krenn died in Velmora; the Glass Guild of Velmora kept her 3 furnaces. However, McCarthy disagreed."
)


def test_names_multi_word_first_then_by_frequency_without_openers():
    found = names(TEXT)
    # multi-word names first (by frequency: Ada Krenn twice), then single words by frequency, then first seen
    assert found == ["Ada Krenn", "Glass Guild of Velmora", "Velmora"]
    # openers and months are not names; a camel-case word is skipped, never cut into "Mc"
    assert not {"The", "In", "March", "However", "Mc", "McCarthy"} & set(found)


def test_numbers_in_order_once_without_trailing_punctuation():
    assert numbers(TEXT) == ["1723", "1750", "2,400", "3"]
    assert numbers("Pi is 3.14. It was 1,000.") == ["3.14", "1,000"]


def test_names_take_at_most_half_the_slots():
    assert key_terms(TEXT) == ["Ada Krenn", "Glass Guild of Velmora", "Velmora", "1723", "1750", "2,400", "3"]
    assert key_terms(TEXT, max_terms=4) == ["Ada Krenn", "Glass Guild of Velmora", "1723", "1750"]
    many = " ".join(f"Count {i} of {i + 100}." for i in range(40))
    assert len(key_terms(many)) == MAX_KEY_TERMS
    assert key_terms(TEXT, max_terms=0) == []
    with pytest.raises(ValueError):
        key_terms(TEXT, max_terms=-1)


def test_line():
    assert key_terms_line("Ada Krenn founded Velmora in 1723.") == (KEY_TERMS_PREFIX + "Ada Krenn; Velmora; 1723.")
    assert key_terms_line("nothing to name here.") == ""
    assert key_terms_line("") == ""


def test_with_key_terms_puts_each_line_after_its_context():
    a, b = "Ada Krenn founded Velmora in 1723.", "nothing to name here."
    assert with_key_terms(["D1", "D2"], [a, b]) == ["D1", key_terms_line(a), "D2"]
    assert with_key_terms(["D1", "D2"], [None, a]) == ["D1", "D2", key_terms_line(a)]  # no text at hand: no line
    with pytest.raises(ValueError):
        with_key_terms(["D1"], [a, b])
    assert append_key_terms("<m>", a) == "<m>\n" + key_terms_line(a)
    assert append_key_terms("<m>", b) == "<m>"
