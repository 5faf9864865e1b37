"""Caption keys of both methods on hand-written captions.

Expected values are literals worked out from spaCy's tokens (en_core_web_sm 3.8.0: text, POS, tag,
lemma, noted per case) and the rules in docs/text-methods.md.
"""

from __future__ import annotations

import pytest

from freqscan.text.keys import (
    CaptionKeys,
    PluralRules,
    has_html,
    norm,
    normalized_keys,
    paper_keys,
    strip_html,
)

# Two/NUM Golden/PROPN Retrievers/PROPN(NNPS, lemma "Retrievers") in/ADP Paris/PROPN
# wearing/VERB(wear) T/NOUN(t) -/PUNCT shirts/NOUN(shirt)
RETRIEVERS = "Two Golden Retrievers in Paris wearing T-shirts"


@pytest.fixture(scope="module")
def plurals(nlp) -> PluralRules:
    return PluralRules.from_pipeline(nlp)


class TestPaperKeys:
    def test_case_kept_plural_proper_noun_kept_hyphen_split(self, nlp):
        # PROPN lemmas are the text: case and plural stay; "T-shirts" gives "t" and "shirt".
        assert paper_keys(nlp(RETRIEVERS)) == {"Golden", "Retrievers", "Paris", "t", "shirt"}

    def test_nouns_only_lemmatized(self, nlp):
        # cups/NOUN(cup) of/ADP coffee/NOUN on a table/NOUN in 2019/NUM: NUM and ADP give no key.
        assert paper_keys(nlp("cups of coffee on a table in 2019")) == {"cup", "coffee", "table"}

    def test_non_letters_stripped_from_lemmas(self, nlp):
        # MP3/NOUN(mp3) player with 4/NUM GB/PROPN memory: "mp3" loses its digit.
        assert paper_keys(nlp("MP3 player with 4GB memory")) == {"mp", "player", "GB", "memory"}

    def test_empty_string_is_a_key(self, nlp):
        # Price/NOUN :/PUNCT 25/NUM %/NOUN: "%" strips to "".
        assert paper_keys(nlp("Price: 25%")) == {"price", ""}

    def test_html_is_text(self, nlp):
        # Ben/PROPN &/CCONJ amp/PROPN ;/PUNCT Jerry/PROPN 's/PART apple/NOUN pie/NOUN
        assert paper_keys(nlp("Ben &amp; Jerry's apple pie")) == {
            "Ben",
            "amp",
            "Jerry",
            "apple",
            "pie",
        }

    def test_lower_case_proper_noun(self, nlp):
        # paris/PROPN(paris) in spring/NOUN
        assert paper_keys(nlp("paris in spring")) == {"paris", "spring"}
        assert paper_keys(nlp("Paris in spring")) == {"Paris", "spring"}


class TestNormalizedKeys:
    def test_lower_cased_proper_nouns_singularised(self, nlp, plurals):
        keys = normalized_keys(nlp(RETRIEVERS), plurals)
        # Nouns give lemma and text; PROPN also the singular candidates of their text
        # ("paris" -> "pari" too); NUM is a noun key; the hyphen is no key.
        assert keys.nouns == {
            "two",
            "golden",
            "retrievers",
            "retriever",
            "paris",
            "pari",
            "t",
            "shirt",
            "shirts",
        }
        assert keys.words == keys.nouns | {"in", "wearing", "wear"}

    def test_digits_kept(self, nlp, plurals):
        keys = normalized_keys(nlp("MP3 player with 4GB memory"), plurals)
        assert keys == CaptionKeys(
            nouns=frozenset({"mp3", "player", "4", "gb", "memory"}),
            words=frozenset({"mp3", "player", "with", "4", "gb", "memory"}),
        )

    def test_empty_string_never_a_key(self, nlp, plurals):
        keys = normalized_keys(nlp("Price: 25%"), plurals)
        assert keys == CaptionKeys(frozenset({"price", "25"}), frozenset({"price", "25"}))

    def test_plural_proper_noun(self, nlp, plurals):
        # Dogs/PROPN(NNP, lemma "Dogs") &/CCONJ Cats/NOUN(cat) :/PUNCT a/DET guide/NOUN
        keys = normalized_keys(nlp("Dogs & Cats: a guide"), plurals)
        assert keys.nouns == {"dogs", "dog", "cats", "cat", "guide"}
        assert keys.words == {"dogs", "dog", "cats", "cat", "a", "guide"}

    def test_adjective_is_a_word_not_a_noun(self, nlp, plurals):
        # She/PRON wore/VERB(wear) an/DET orange/ADJ scarf/NOUN
        keys = normalized_keys(nlp("She wore an orange scarf"), plurals)
        assert keys.nouns == {"scarf"}
        assert keys.words == {"she", "wore", "wear", "an", "orange", "scarf"}


class TestNorm:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("T-Shirt's", "tshirts"),
            ("Pokémon", "pokémon"),  # letters beyond ASCII are letters
            ("16.4", "164"),
            ("A330-200", "a330200"),
            ("_-_", ""),
        ],
    )
    def test_norm(self, text, expected):
        assert norm(text) == expected


class TestPluralRules:
    @pytest.mark.parametrize(
        ("word", "expected"),
        [
            ("retrievers", ("retriever",)),
            ("leaves", ("leaf", "leave")),  # irregular (exception table), then suffix rules
            ("teeth", ("tooth",)),
            ("glasses", ("glasse", "glass")),  # no word-list check: "glasse" is harmless
            ("men", ("man",)),
            ("s", ()),  # a suffix never eats the whole word
            ("dog", ()),
        ],
    )
    def test_singulars(self, plurals, word, expected):
        assert plurals.singulars(word) == expected


class TestHtml:
    @pytest.mark.parametrize(
        "caption",
        [
            "<b>Car</b> model",
            "Orchid<br>Dresses",
            "<a href='http://x.org/a-b'>Yale</a> Hospital",
            "line<br/>break",
            "Tom &amp; Jerry",
            "it&#39;s",
            "it&#x27;s",
        ],
    )
    def test_detected(self, caption):
        assert has_html(caption)

    @pytest.mark.parametrize(
        "caption", ["a < b > c", "I <3 NY", "Q&A", "AT&T", "fish & chips", "5 > 3", "&nope"]
    )
    def test_not_detected(self, caption):
        assert not has_html(caption)

    @pytest.mark.parametrize(
        ("caption", "expected"),
        [
            ("Orchid<br>Dresses<br>", "Orchid Dresses "),
            ("<b>Golden Retriever</b> puppies", " Golden Retriever  puppies"),
            ("Tom &amp; Jerry", "Tom & Jerry"),
            # escaped once in the scrape: unescaped first, then removed as a tag
            ("&lt;i&gt;Truong Son&lt;/i&gt; muntjac", " Truong Son  muntjac"),
            ("no markup", "no markup"),
        ],
    )
    def test_stripped(self, caption, expected):
        assert strip_html(caption) == expected
