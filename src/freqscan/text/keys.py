"""Caption -> keys: what a parsed caption offers for concepts to match, per method.

``paper`` keys are the paper's exact set expression. ``normalized`` keys are lower-cased and keep
letters and digits, and come in two sets: *noun* keys (nouns, proper nouns, numbers), which a
concept's head must be among, and *word* keys (every token's form and lemma), which its modifiers
must be among. docs/text-methods.md states both methods in full.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc, Token

PAPER_POS = ("NOUN", "PROPN")
NOUN_POS = ("NOUN", "PROPN", "NUM")

_PAPER_STRIP = re.compile(r"[^A-Za-z ]")
# Unicode-aware: keeps letters (also accented) and digits, drops punctuation, symbols, "_".
_NON_ALNUM = re.compile(r"[\W_]+")
# A start, end or self-closing tag: "<br>", "</b>", "<a href='...'>", "<br/>". A letter must follow
# "<" directly, so "a < b > c" and "<3" are left alone.
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def has_html(caption: str) -> bool:
    """Whether a caption holds an HTML tag or a character entity (``&amp;``, ``&#39;``)."""
    return bool(_TAG.search(caption) or _ENTITY.search(caption))


def strip_html(caption: str) -> str:
    """Unescape entities, then replace tags with a space.

    Unescaping first also removes tags that were escaped once (``&lt;i&gt;``), which LAION
    scrapes contain. A tag becomes a space because ``<br>`` separates words.
    """
    return _TAG.sub(" ", html.unescape(caption))


def paper_keys(doc: Doc) -> frozenset[str]:
    """The paper's key set: letters-and-spaces-only lemmas of nouns and proper nouns.

    Case is kept (``Paris`` stays ``Paris``) and the empty string is a key when a noun's lemma
    has no letter (``%`` tagged NOUN), exactly as in the paper's code.
    """
    return frozenset(_PAPER_STRIP.sub("", tok.lemma_) for tok in doc if tok.pos_ in PAPER_POS)


@lru_cache(maxsize=200_000)
def norm(text: str) -> str:
    """Lower-case and keep only letters and digits (``"T-Shirt's"`` -> ``"tshirts"``)."""
    return _NON_ALNUM.sub("", text.lower())


@dataclass(frozen=True, slots=True)
class PluralRules:
    """spaCy's English noun singularisation rules, as plain data (picklable, no spaCy object).

    spaCy never lemmatizes proper nouns, so "Retrievers" in a title-case caption keeps its
    plural. These rules give its singular candidates, as the lemmatizer would for a noun.

    Args:
        suffixes: ``(old, new)`` suffix rewrites, in spaCy's order (``("ies", "y")``...).
        exceptions: Irregular plurals: lower-cased form -> its lemmas (``"teeth"`` -> tooth).
    """

    suffixes: tuple[tuple[str, str], ...]
    exceptions: Mapping[str, tuple[str, ...]]

    @classmethod
    def from_pipeline(cls, nlp: Language) -> PluralRules:
        """Read the noun rules of a pipeline's rule-based lemmatizer (empty if it has none)."""
        lookups = getattr(nlp.get_pipe("lemmatizer"), "lookups", None)
        rules = lookups.get_table("lemma_rules", {}).get("noun", []) if lookups else []
        exc = lookups.get_table("lemma_exc", {}).get("noun", {}) if lookups else {}
        return cls(
            suffixes=tuple((old, new) for old, new in rules),
            exceptions={form: tuple(lemmas) for form, lemmas in exc.items()},
        )

    def singulars(self, word: str) -> tuple[str, ...]:
        """Every singular candidate of a lower-cased plural (without spaCy's vocabulary check).

        spaCy keeps only candidates in its word list; without that list some candidates are
        not words (``"glasses"`` -> ``glass`` and ``glasse``), which is harmless: a key that is
        no concept's term never matches anything.
        """
        forms = list(self.exceptions.get(word, ()))
        forms += [
            word[: len(word) - len(old)] + new
            for old, new in self.suffixes
            if word.endswith(old) and len(word) > len(old)
        ]
        return tuple(dict.fromkeys(forms))


@dataclass(frozen=True, slots=True)
class CaptionKeys:
    """The keys of one caption.

    Args:
        nouns: Keys a concept's noun terms are looked up in.
        words: Keys a concept's word terms (normalized modifiers) are looked up in; empty for
            the paper method, which has none.
    """

    nouns: frozenset[str]
    words: frozenset[str] = frozenset()


def _noun_keys(tok: Token, plurals: PluralRules) -> tuple[str, ...]:
    keys = (norm(tok.lemma_), norm(tok.text))
    if tok.pos_ == "PROPN":
        return keys + tuple(norm(s) for s in plurals.singulars(tok.lower_))
    return keys


def normalized_keys(doc: Doc, plurals: PluralRules) -> CaptionKeys:
    """The normalized keys of a parsed caption.

    Noun keys: of every NOUN, PROPN and NUM token, :func:`norm` of its lemma and of its text (a
    plural keeps its own form: "glasses" gives glass and glasses), and for a proper noun the
    singulars of its text ("Dogs" gives dogs and dog, see :class:`PluralRules`). Word keys: the
    noun keys plus :func:`norm` of every token's text and lemma. The empty string is never a key.
    """
    nouns: set[str] = set()
    words: set[str] = set()
    for tok in doc:
        if tok.pos_ in NOUN_POS:
            nouns.update(_noun_keys(tok, plurals))
        words.add(norm(tok.text))
        words.add(norm(tok.lemma_))
    nouns.discard("")
    words |= nouns
    words.discard("")
    return CaptionKeys(frozenset(nouns), frozenset(words))
