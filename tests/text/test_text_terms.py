"""Concept terms of both methods for the test concepts (text_cases.TEST_CONCEPTS).

Expected values are worked out from spaCy's tokens and lemma tables (en_core_web_sm 3.8.0) and the
rules in docs/text-methods.md; the comments give the facts each one rests on.
"""

from __future__ import annotations

import pytest
from text_cases import TEST_CONCEPTS

from freqscan.text.terms import ConceptTerms, Query, normalized_terms, paper_terms, unigrams


def one(nouns=(), words=()) -> ConceptTerms:
    return ConceptTerms((Query(nouns=nouns, words=words),))


NEVER = ConceptTerms(())

PAPER = {
    # golden/ADJ(golden), retriever/VERB(retriever), each parsed alone
    "Golden Retriever": one(nouns=(("golden",), ("retriever",))),
    # t-shirt parses as t - shirt: the last token's lemma only
    "T-shirt": one(nouns=(("shirt",),)),
    "shirt": one(nouns=(("shirt",),)),
    "cup of coffee": one(nouns=(("cup",), ("of",), ("coffee",))),
    "cups": one(nouns=(("cup",),)),
    "apple_pie": one(nouns=(("apple",), ("pie",))),
    "1991 Volkswagen Golf Hatchback": NEVER,  # "1991" is no letter
    # footed/VERB(foot)
    "Black_footed_Albatross": one(nouns=(("black",), ("foot",), ("albatross",))),
    "orange": one(nouns=(("orange",),)),
    "banded": one(nouns=(("band",),)),  # banded/VERB(band)
    "light-house": one(nouns=(("house",),)),
    "Mercedes-Benz": one(nouns=(("benz",),)),
    "Paris": one(nouns=(("paris",),)),
    "dog": one(nouns=(("dog",),)),
    "leaves": one(nouns=(("leave",),)),  # leaves/VERB(leave)
    "colt's foot": NEVER,  # colt's parses as colt 's: lemma "'s"
    "ram (adult male sheep)": NEVER,  # sheep) parses as sheep ): lemma ")"
}

NORMALIZED = {
    # retriever is only a noun in spaCy's lexicon: the head may be any word
    "Golden Retriever": one(words=(("golden",), ("retriever",))),
    # shirt is a noun and a verb: the head must be a noun; joined "tshirt" is no listed noun
    "T-shirt": ConceptTerms(
        (Query(nouns=(("shirt",),), words=(("t",),)), Query(words=(("tshirt",),)))
    ),
    "shirt": one(nouns=(("shirt",),)),
    "cup of coffee": one(words=(("cup",), ("of",), ("coffee",))),
    # cups is no listed noun: its plural-noun lemma cup is a form too; cup is a noun and a verb
    "cups": one(nouns=(("cups", "cup"),)),
    "apple_pie": one(words=(("apple",), ("pie",))),
    "1991 Volkswagen Golf Hatchback": one(
        words=(("1991",), ("volkswagen",), ("golf",), ("hatchback",))
    ),
    # footed/ADJ in the phrase; albatross is a listed noun, so no singular is made of it
    "Black_footed_Albatross": one(words=(("black",), ("footed",), ("albatross",))),
    "orange": one(nouns=(("orange",),)),  # noun and adjective
    "banded": one(words=(("banded",),)),  # no noun
    "light-house": ConceptTerms(
        (Query(nouns=(("house",),), words=(("light",),)), Query(words=(("lighthouse",),)))
    ),
    "Mercedes-Benz": ConceptTerms(
        (Query(words=(("mercedes",), ("benz",))), Query(words=(("mercedesbenz",),)))
    ),
    "Paris": one(words=(("paris",),)),
    "dog": one(nouns=(("dog",),)),
    # leaves -> leaf, leave (exception table); leaf and leave are nouns and verbs
    "leaves": one(nouns=(("leaves", "leaf", "leave"),)),
    # the possessive 's is dropped; foot is a noun and a verb
    "colt's foot": one(nouns=(("foot",),), words=(("colt",),)),
    # punctuation is dropped; sheep is only a noun
    "ram (adult male sheep)": one(words=(("ram",), ("adult",), ("male",), ("sheep",))),
}


def test_expectations_cover_every_test_concept():
    assert set(PAPER) == set(NORMALIZED) == set(TEST_CONCEPTS)


@pytest.mark.parametrize(
    ("concept", "expected"),
    [
        ("Black_footed_Albatross", ["black", "footed", "albatross"]),
        ("  shoji screen / room divider ", ["shoji", "screen", "/", "room", "divider"]),
        ("a__b\tc", ["a", "b", "c"]),
        ("T-shirt", ["t-shirt"]),
    ],
)
def test_unigrams(concept, expected):
    assert unigrams(concept) == expected


def test_paper_terms(nlp):
    assert dict(zip(TEST_CONCEPTS, paper_terms(TEST_CONCEPTS, nlp), strict=True)) == PAPER


def test_normalized_terms(nlp):
    got = dict(zip(TEST_CONCEPTS, normalized_terms(TEST_CONCEPTS, nlp), strict=True))
    assert got == NORMALIZED


def test_punctuation_only_concept_has_no_query(nlp):
    assert normalized_terms(["&", "--"], nlp) == [NEVER, NEVER]


@pytest.mark.parametrize(
    ("terms", "text"),
    [
        (NORMALIZED["T-shirt"], "t + shirt (noun) | tshirt"),
        (NORMALIZED["leaves"], "leaves/leaf/leave (noun)"),
        (NORMALIZED["cup of coffee"], "cup + of + coffee"),
        (PAPER["Golden Retriever"], "golden (noun) + retriever (noun)"),
        (NEVER, "(never matches)"),
    ],
)
def test_describe(terms, text):
    assert terms.describe() == text
