"""ConceptMatcher: which concepts a parsed caption counts for."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from freqscan.config import METHODS
from freqscan.text.keys import CaptionKeys, PluralRules, normalized_keys, paper_keys
from freqscan.text.pipeline import pipeline_info
from freqscan.text.terms import ConceptTerms, normalized_terms, paper_terms

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

    from freqscan.concepts import ConceptSet

Index = dict[str, tuple[int, ...]]


class ConceptMatcher:
    """Matches parsed captions against a concept set under one method.

    Plain data only (no spaCy object), so it pickles small and ships to workers; build it once,
    on the driver, with :meth:`build`. Every query of every concept is indexed under the forms of
    its head, so a caption checks only the concepts its own keys point to, never the whole set.

    Args:
        method: ``paper`` or ``normalized``.
        names: Concept names.
        ids: Concept ids (:attr:`freqscan.concepts.Concept.id`), aligned with ``names``.
        terms: Concept terms, aligned with ``names``.
        plurals: Noun singularisation rules for normalized caption keys.
        pipeline: :func:`~freqscan.text.pipeline.pipeline_info` of the pipeline the terms were
            computed with; captions must be parsed with the same one.

    Attributes:
        unmatchable: Names of the concepts that can never match under this method.
    """

    def __init__(
        self,
        method: str,
        names: Sequence[str],
        ids: Sequence[int],
        terms: Sequence[ConceptTerms],
        plurals: PluralRules,
        pipeline: dict[str, str],
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")
        if not len(names) == len(ids) == len(terms):
            raise ValueError("names, ids and terms must have the same length")
        self.method = method
        self.pipeline = dict(pipeline)
        self._names = tuple(names)
        self._ids = tuple(ids)
        self._terms = tuple(terms)
        self._plurals = plurals
        self._position = {cid: i for i, cid in enumerate(self._ids)}
        self.unmatchable: tuple[str, ...] = tuple(
            n for n, t in zip(self._names, self._terms, strict=True) if not t.queries
        )
        self._noun_index, self._word_index = _indexes(self._terms)

    @classmethod
    def build(cls, concepts: ConceptSet, nlp: Language, method: str) -> ConceptMatcher:
        """Compute every concept's terms with ``nlp`` and index them.

        Args:
            concepts: The concept set.
            nlp: The pipeline captions will be parsed with (from
                :func:`~freqscan.text.pipeline.load_pipeline`).
            method: ``paper`` or ``normalized``.
        """
        if method not in METHODS:
            raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")
        names = [c.name for c in concepts]
        make_terms = paper_terms if method == "paper" else normalized_terms
        return cls(
            method=method,
            names=names,
            ids=[c.id for c in concepts],
            terms=make_terms(names, nlp),
            plurals=PluralRules.from_pipeline(nlp),
            pipeline=pipeline_info(nlp),
        )

    def keys(self, doc: Doc) -> CaptionKeys:
        """The keys of a parsed caption under this matcher's method."""
        if self.method == "paper":
            return CaptionKeys(paper_keys(doc))
        return normalized_keys(doc, self._plurals)

    def match_keys(self, keys: CaptionKeys) -> list[int]:
        """Sorted ids of the concepts a caption with these keys counts for."""
        candidates: set[int] = set()
        for key in keys.nouns:
            candidates.update(self._noun_index.get(key, ()))
        for key in keys.words:
            candidates.update(self._word_index.get(key, ()))
        return sorted(self._ids[i] for i in candidates if self._terms[i].matches(keys))

    def match_doc(self, doc: Doc) -> list[int]:
        """Sorted ids of the concepts a parsed caption counts for."""
        return self.match_keys(self.keys(doc))

    def terms(self, concept_id: int) -> ConceptTerms:
        """What a concept searches (``KeyError`` for an id not in the set)."""
        return self._terms[self._position[concept_id]]

    def name(self, concept_id: int) -> str:
        """The name of a concept of the set (``KeyError`` for an id not in the set)."""
        return self._names[self._position[concept_id]]


def _indexes(terms: Sequence[ConceptTerms]) -> tuple[Index, Index]:
    """Inverted indexes head form -> concept positions: one over noun keys, one over word keys."""
    nouns: defaultdict[str, set[int]] = defaultdict(set)
    words: defaultdict[str, set[int]] = defaultdict(set)
    for i, concept in enumerate(terms):
        for query in concept.queries:
            is_noun, forms = query.anchor
            for form in forms:
                (nouns if is_noun else words)[form].add(i)
    return (
        {f: tuple(sorted(ix)) for f, ix in nouns.items()},
        {f: tuple(sorted(ix)) for f, ix in words.items()},
    )
