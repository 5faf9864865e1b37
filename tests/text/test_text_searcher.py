"""TextSearcher: per-method preprocessing, batching, the caption cache, pipeline checks."""

from __future__ import annotations

import copy

import pytest
from text_cases import CASES

from freqscan.config import METHODS, TextConfig
from freqscan.text.pipeline import SpacyPipelineError, pipeline_info
from freqscan.text.searcher import TextSearcher


@pytest.fixture(scope="module")
def searchers(matchers) -> dict[str, TextSearcher]:
    return {m: TextSearcher(TextConfig(method=m, spacy_batch_size=4), matchers[m]) for m in METHODS}


def names(matcher, ids) -> set[str]:
    return {matcher.name(i) for i in ids}


@pytest.mark.parametrize("method", METHODS)
def test_search_gives_each_caption_its_matches(searchers, matchers, method):
    captions = [c[0] for c in CASES]
    expected = [c[1] if method == "paper" else c[2] for c in CASES]
    results = searchers[method].search(captions)
    assert [names(matchers[method], ids) for ids in results] == expected
    assert all(ids == sorted(ids) for ids in results)


def test_empty_batch(searchers):
    assert searchers["normalized"].search([]) == []


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        # raw: "Retriever</b" is one token
        ("<b>Golden Retriever</b> puppies for sale", {"Golden Retriever"}),
        # raw: "apple&#32;pie" is one token
        ("homemade apple&#32;pie", {"apple_pie"}),
        # raw: one token; stripped: Cup/PROPN \xa0 of \xa0 Coffee/PROPN ("cups" searches cup)
        ("Cup&nbsp;of&nbsp;Coffee", {"cup of coffee", "cups"}),
    ],
)
def test_normalized_strips_html_first(nlp, searchers, matchers, caption, expected):
    matcher = matchers["normalized"]
    assert names(matcher, matcher.match_doc(nlp(caption))) == set()
    assert names(matcher, searchers["normalized"].search([caption])[0]) == expected


def test_paper_parses_html_as_is(searchers):
    caption = "homemade apple&#32;pie"
    assert searchers["paper"].prepare(caption) == caption
    assert searchers["paper"].search([caption]) == [[]]


def test_cache_is_bounded_lru_and_counts_hits(matchers):
    searcher = TextSearcher(TextConfig(method="paper", caption_cache_size=2), matchers["paper"])
    shirt = searcher.search(["a shirt and tie"])[0]
    assert shirt  # T-shirt and shirt
    # a repeat inside one call is parsed once
    assert searcher.search(["a red car", "a shirt and tie", "a red car"]) == [[], shirt, []]
    assert (searcher.captions_parsed, searcher.cache_hits) == (2, 2)
    searcher.search(["a shirt and tie"])  # hit: now the most recently used
    searcher.search(["a blue boat"])  # evicts "a red car", the least recently used
    assert (searcher.captions_parsed, searcher.cache_hits) == (3, 3)
    assert searcher.search(["a red car", "a shirt and tie"]) == [[], shirt]
    assert (searcher.captions_parsed, searcher.cache_hits) == (4, 4)


def test_cache_off(matchers):
    searcher = TextSearcher(TextConfig(method="paper", caption_cache_size=0), matchers["paper"])
    shirt = searcher.search(["a shirt and tie", "a shirt and tie"])
    assert shirt[0] == shirt[1] != []
    assert searcher.search(["a shirt and tie"]) == [shirt[0]]
    # Off means off: repeats are parsed again, within a call and across calls.
    assert (searcher.captions_parsed, searcher.cache_hits) == (3, 0)


@pytest.mark.slow
@pytest.mark.parametrize("cache", [0, 100_000])
def test_paper_searcher_equals_the_full_pipeline_on_real_captions(full_nlp, laion_captions, cache):
    """Lemmatizing only nouns (paper) gives exactly the matches of the full pipeline."""
    from freqscan.concepts import load_concepts
    from freqscan.text.matcher import ConceptMatcher
    from freqscan.text.pipeline import load_pipeline

    matcher = ConceptMatcher.build(load_concepts(), load_pipeline(None), "paper")
    searcher = TextSearcher(TextConfig(method="paper", caption_cache_size=0), matcher)
    expected = [matcher.match_doc(doc) for doc in full_nlp.pipe(laion_captions, batch_size=256)]
    assert searcher.search(laion_captions) == expected
    assert sum(map(len, expected)) > 8_000


def test_info_is_the_pipeline_info(nlp, searchers):
    assert searchers["paper"].info == pipeline_info(nlp)


def test_method_mismatch(matchers):
    with pytest.raises(ValueError, match="built for method 'paper'"):
        TextSearcher(TextConfig(method="normalized"), matchers["paper"])


def test_pipeline_mismatch(matchers):
    other = copy.copy(matchers["paper"])
    other.pipeline = {**other.pipeline, "spacy_pipeline": "en_core_web_lg"}
    with pytest.raises(SpacyPipelineError, match="en_core_web_lg"):
        TextSearcher(TextConfig(method="paper"), other)


def test_unknown_pipeline(matchers):
    with pytest.raises(SpacyPipelineError, match="no_such_pipeline"):
        TextSearcher(TextConfig(method="paper", spacy_model="no_such_pipeline"), matchers["paper"])
