"""Concept -> terms: what a concept searches for, per method.

A concept's terms are computed once, on the driver, with the same spaCy pipeline that parses the
captions; the result is plain data that ships to workers inside the matcher.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from freqscan.text.keys import CaptionKeys, norm

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

_UNIGRAM_SPLIT = re.compile(r"[_\s]+")
# A paper key only ever holds ASCII letters and spaces, so a term with anything else never matches.
_PAPER_KEY_CHARS = re.compile(r"[A-Za-z ]*")
# A hyphen inside a word: "light-house", "t-shirt", "a330-200".
_INNER_HYPHEN = re.compile(r"(?<=\w)-(?=\w)")
# Penn tag of the possessive "'s": "colt's foot" searches colt and foot, so "colts foot" counts.
_POSSESSIVE_TAG = "POS"

Forms = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Query:
    """One way a concept can be found: groups of alternative forms, every group must be found.

    Args:
        nouns: Groups of which one form must be a noun key of the caption. Paper: one group per
            unigram, holding its lemma. Normalized: the head's forms when the head is an
            ambiguous noun.
        words: Groups of which one form must be a word key of the caption. Paper: none.
            Normalized: one group per modifier, then the head's forms unless in ``nouns``.
    """

    nouns: tuple[Forms, ...] = ()
    words: tuple[Forms, ...] = ()

    @property
    def anchor(self) -> tuple[bool, Forms]:
        """``(is_noun_group, forms)`` of the group the query is indexed under: its head."""
        return (True, self.nouns[-1]) if self.nouns else (False, self.words[-1])

    def matches(self, keys: CaptionKeys) -> bool:
        """Whether a caption with these keys satisfies the query."""
        return all(any(f in keys.nouns for f in forms) for forms in self.nouns) and all(
            any(f in keys.words for f in forms) for forms in self.words
        )

    def describe(self) -> str:
        """Modifiers, then nouns: ``t + shirt (noun)``; alternative forms joined by ``/``."""
        groups = ["/".join(g) for g in self.words] + ["/".join(g) + " (noun)" for g in self.nouns]
        return " + ".join(groups)


@dataclass(frozen=True, slots=True)
class ConceptTerms:
    """What one concept searches: a caption counts when one of the queries matches.

    Args:
        queries: Alternatives; none when the concept can never match under its method.
    """

    queries: tuple[Query, ...]

    def matches(self, keys: CaptionKeys) -> bool:
        """Whether a caption with these keys counts for the concept."""
        return any(q.matches(keys) for q in self.queries)

    def describe(self) -> str:
        """What the concept searches, for people: ``t + shirt (noun) | tshirt``."""
        return " | ".join(q.describe() for q in self.queries) or "(never matches)"


def unigrams(concept: str) -> list[str]:
    """The paper's split: lower-case, split on runs of ``_`` and whitespace, drop empties."""
    return [u for u in _UNIGRAM_SPLIT.split(concept.lower()) if u]


def paper_terms(concepts: Sequence[str], nlp: Language) -> list[ConceptTerms]:
    """The paper's concept terms: each unigram parsed alone, its last token's lemma.

    Args:
        concepts: Concept names.
        nlp: The pipeline that parses captions.

    Returns:
        One :class:`ConceptTerms` per concept, in order, with one query whose noun groups are
        the unigram lemmas. A concept with a lemma holding a character other than an ASCII
        letter or a space gets no query: no paper key can equal that lemma, so the concept
        never matches (e.g. ``1991 Volkswagen Golf Hatchback``).
    """
    split = [unigrams(c) for c in concepts]
    vocab = sorted({u for us in split for u in us})
    # The paper's dict comprehension {term: token.lemma_ for token in nlp(term)} keeps the last
    # token's lemma: "t-shirt" -> "shirt", "mercedes-benz" -> "benz", "(bird" -> "bird".
    lemma = {u: doc[-1].lemma_ for u, doc in zip(vocab, nlp.pipe(vocab), strict=True)}
    out = []
    for us in split:
        lemmas = tuple(dict.fromkeys(lemma[u] for u in us))
        if all(_PAPER_KEY_CHARS.fullmatch(t) for t in lemmas):
            out.append(ConceptTerms((Query(nouns=tuple((t,) for t in lemmas)),)))
        else:
            out.append(ConceptTerms(()))
    return out


def normalized_terms(concepts: Sequence[str], nlp: Language) -> list[ConceptTerms]:
    """The normalized concept terms: a head plus modifiers, hyphenated words split or joined.

    The lower-cased unigrams are joined by spaces and parsed as one phrase. Its tokens, minus
    punctuation and the possessive ``'s``, are the concept's words (spaCy splits ``t-shirt``
    into ``t``, ``-``, ``shirt`` here exactly as in captions). The last word is the head; its
    forms are its text and its lemmas as a plural noun (``leaves`` -> leaves, leaf, leave;
    ``men`` -> men, man), but no suffix rewrite of a word spaCy's lexicon lists as a noun
    (``grass``, ``glasses`` stay as they are). Each other word is a modifier whose forms are its
    text and its lemma in the phrase.

    Every modifier must be a word key of the caption. The head must be a noun key when it is
    ambiguous, i.e. spaCy's lexicon lists it as a noun and also as an adjective, verb or adverb
    (``orange``, ``can``, ``back``): that keeps "orange dress" from counting for the fruit.
    Any other head may be any word key: a word that can only be a noun needs no tagger to say
    so (and the small tagger mis-tags rare nouns: "a photo of an acorn" -> acorn/ADJ), and a
    word that cannot be a noun (``banded``, ``crawling``) would otherwise never match.

    A concept with a hyphen inside a word has a second query, the same rules applied to the
    phrase with those hyphens removed: ``light-house`` searches light + house, or lighthouse.

    Args:
        concepts: Concept names.
        nlp: The pipeline that parses captions; its lemmatizer's tables give the lexicon.

    Returns:
        One :class:`ConceptTerms` per concept, in order; no query for a concept without a word
        (punctuation only).
    """
    lexicon = _Lexicon(nlp)
    phrases = [" ".join(unigrams(c)) for c in concepts]
    joined = [_INNER_HYPHEN.sub("", p) for p in phrases]
    split_queries = [_query(doc, lexicon) for doc in nlp.pipe(phrases)]
    joined_queries = [_query(doc, lexicon) for doc in nlp.pipe(joined)]
    return [
        ConceptTerms(tuple(q for q in dict.fromkeys((a, b)) if q is not None))
        for a, b in zip(split_queries, joined_queries, strict=True)
    ]


def _query(doc: Doc, lexicon: _Lexicon) -> Query | None:
    words = [t for t in doc if norm(t.text) and t.tag_ != _POSSESSIVE_TAG]
    if not words:
        return None
    head = words[-1].lower_
    head_forms = _unique(norm(f) for f in (head, *lexicon.singulars(head)))
    modifiers = tuple(
        dict.fromkeys(_unique(norm(f) for f in (t.text, t.lemma_)) for t in words[:-1])
    )
    if lexicon.is_ambiguous_noun(head):
        return Query(nouns=(head_forms,), words=modifiers)
    return Query(words=(*modifiers, head_forms))


def _unique(forms: Iterable[str]) -> Forms:
    return tuple(f for f in dict.fromkeys(forms) if f)


class _Lexicon:
    """spaCy's English word lists by part of speech (the rule lemmatizer's ``lemma_index``)."""

    _OTHER = ("adj", "verb", "adv")

    def __init__(self, nlp: Language) -> None:
        self._nlp = nlp
        self._lemmatizer = nlp.get_pipe("lemmatizer")
        # Only a rule-mode lemmatizer (every en_core_web_* pipeline) has rules and word lists.
        self._rules = getattr(self._lemmatizer, "mode", None) == "rule"
        lookups = self._lemmatizer.lookups if self._rules else None
        index = lookups.get_table("lemma_index", {}) if lookups else {}
        exceptions = lookups.get_table("lemma_exc", {}) if lookups else {}
        self._index = {pos: frozenset(index.get(pos, ())) for pos in ("noun", *self._OTHER)}
        self._noun_exceptions = exceptions.get("noun", {})

    def singulars(self, word: str) -> list[str]:
        """The lemmas of ``word`` read as a plural noun, except suffix rewrites of a listed noun:
        a listed noun is a base form ("grass", "glasses"), whose rewrites are no words ("gras",
        which "Mardi Gras" would then match). Irregular plurals still give their lemmas, also
        when listed themselves (``men`` -> man, ``teeth`` -> tooth)."""
        if self.listed(word, "noun"):
            return list(self._noun_exceptions.get(word, ()))
        return self.lemmas(word, "noun")

    def lemmas(self, word: str, pos: str) -> list[str]:
        """spaCy's rule lemmas of ``word`` read as an inflected ``pos`` (noun: plural), e.g.
        ``churros`` -> churro as a noun, ``crawling`` -> crawl as a verb."""
        if not self._rules:
            return []
        from spacy.tokens import Doc

        morphs = ["Number=Plur" if pos == "noun" else ""]
        doc = Doc(self._nlp.vocab, words=[word], pos=[pos.upper()], morphs=morphs)
        return list(self._lemmatizer.rule_lemmatize(doc[0]))

    def is_ambiguous_noun(self, word: str) -> bool:
        """Whether ``word`` is listed as a noun and as an adjective, verb or adverb. Without word
        lists (a pipeline with no rule lemmatizer) every word counts as ambiguous, the reading
        that keeps the paper's noun-only matching."""
        if not self._rules:
            return True
        return self._known(word, "noun") and any(self._known(word, p) for p in self._OTHER)

    def listed(self, word: str, pos: str) -> bool:
        """Whether ``word`` itself is in the ``pos`` word list."""
        return word in self._index[pos]

    def _known(self, word: str, pos: str) -> bool:
        return self.listed(word, pos) or any(self.listed(f, pos) for f in self.lemmas(word, pos))
