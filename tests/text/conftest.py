"""Fixtures of the text-search tests: real spaCy pipelines, loaded once per session.

``laion_captions`` (the 10,000 bundled LAION captions) comes from tests/conftest.py; the concepts
the tests spell out are in text_cases.py (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import pytest
import spacy
from text_cases import TEST_CONCEPTS

from freqscan.concepts import Concept, ConceptSet
from freqscan.config import METHODS
from freqscan.text.matcher import ConceptMatcher
from freqscan.text.pipeline import load_pipeline, resolve_pipeline


@pytest.fixture(scope="session")
def nlp() -> spacy.language.Language:
    """The pipeline as freqscan loads it (key-irrelevant components disabled)."""
    return load_pipeline(None)


@pytest.fixture(scope="session")
def full_nlp() -> spacy.language.Language:
    """The same pipeline with every component enabled."""
    return spacy.load(resolve_pipeline(None))


@pytest.fixture(scope="session")
def test_concepts() -> ConceptSet:
    return ConceptSet(tuple(Concept(n) for n in TEST_CONCEPTS), source="tests")


@pytest.fixture(scope="session")
def matchers(nlp, test_concepts) -> dict[str, ConceptMatcher]:
    return {m: ConceptMatcher.build(test_concepts, nlp, m) for m in METHODS}
