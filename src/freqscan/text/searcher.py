"""TextSearcher: captions -> matched concept ids (and the keys they matched by), one per worker."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from freqscan.text.keys import PAPER_POS, CaptionKeys, has_html, strip_html
from freqscan.text.pipeline import SpacyPipelineError, load_pipeline, pipeline_info

if TYPE_CHECKING:
    from freqscan.config import TextConfig
    from freqscan.records import Sample
    from freqscan.text.matcher import ConceptMatcher

# A caption's matched concept ids and its keys.
Found = tuple[tuple[int, ...], CaptionKeys]
# How the cache keeps one: keys as tuples, about a third of the frozensets' memory (a full cache
# holds 100,000 captions per worker); a hit makes the sets again.
_Cached = tuple[tuple[int, ...], tuple[str, ...], tuple[str, ...]]

# What must agree between the pipeline the concept terms were computed with (on the driver) and
# the one that parsed captions (on a worker, or for stored keys): another model or spaCy gives
# other lemmas.
PIPELINE_IDENTITY = ("spacy_pipeline", "spacy_pipeline_version", "spacy_version")


def pipeline_differences(expected: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    """``key: expected vs actual`` for each :data:`PIPELINE_IDENTITY` entry that differs."""
    return [
        f"{k}: {expected.get(k)!r} vs {actual.get(k)!r}"
        for k in PIPELINE_IDENTITY
        if expected.get(k) != actual.get(k)
    ]


class TextSearcher:
    """Finds the concepts each caption counts for. Loads spaCy once, in ``__init__``.

    Args:
        config: Text settings: method, pipeline, batch size, cache size.
        matcher: Built on the driver with the same method and pipeline.

    Attributes:
        info: :func:`~freqscan.text.pipeline.pipeline_info` of the loaded pipeline.
        cache_hits: Captions answered without parsing: seen before (in the cache) or repeated
            within the same call.
        captions_parsed: Captions run through spaCy.

    Raises:
        ValueError: The matcher was built for another method.
        SpacyPipelineError: The pipeline cannot be loaded, or differs from the matcher's.
    """

    def __init__(self, config: TextConfig, matcher: ConceptMatcher) -> None:
        if matcher.method != config.method:
            raise ValueError(
                f"matcher was built for method {matcher.method!r}, "
                f"config asks for {config.method!r}"
            )
        self._config = config
        self._matcher = matcher
        self._nlp = load_pipeline(config.spacy_model)
        self.info = pipeline_info(self._nlp)
        differs = pipeline_differences(matcher.pipeline, self.info)
        if differs:
            raise SpacyPipelineError(
                "the matcher's concept terms were computed with another spaCy pipeline ("
                + ", ".join(differs)
                + "); install the same pipeline on every worker"
            )
        # `paper` keys read the lemmas of nouns and proper nouns only. The lemmatizer component
        # lemmatizes every token, about 15% of parse time; instead it is skipped in nlp.pipe and
        # its own lemmatize() runs on just those tokens, exactly as its __call__ would, so no
        # key changes (tests/text/test_text_searcher.py checks it on the 10,000 captions).
        self._noun_lemmatizer = (
            self._nlp.get_pipe("lemmatizer") if config.method == "paper" else None
        )
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self.cache_hits = 0
        self.captions_parsed = 0

    def prepare(self, caption: str) -> str:
        """The text spaCy parses: the caption itself (paper), or with HTML removed (normalized)."""
        if self._config.method == "normalized" and has_html(caption):
            return strip_html(caption)
        return caption

    def search(self, captions: Sequence[str]) -> list[list[int]]:
        """Match a batch of captions.

        Args:
            captions: Caption strings.

        Returns:
            Per caption, in order, the sorted ids of the concepts it counts for.
        """
        return [ids for ids, _ in self.search_with_keys(captions)]

    def search_samples(self, samples: Sequence[Sample]) -> list[tuple[list[int], CaptionKeys]]:
        """:meth:`search_with_keys` of the samples' captions (a reader's ``Search``)."""
        return self.search_with_keys([s.caption for s in samples])

    def search_with_keys(self, captions: Sequence[str]) -> list[tuple[list[int], CaptionKeys]]:
        """Match a batch of captions, also returning the keys each one was matched by.

        The keys are what a concept added later needs (``freqscan add-concepts``), so the count
        stores them instead of parsing the captions again.

        Returns:
            Per caption, in order, the sorted ids of the concepts it counts for and its keys.
        """
        if self._config.caption_cache_size <= 0:
            # Cache off: every caption is parsed, repeats too (what the benchmark measures).
            return [(list(ids), keys) for ids, keys in self._parse(captions)]
        results: list[Found] = [((), CaptionKeys(frozenset()))] * len(captions)
        pending: dict[str, list[int]] = {}
        for i, caption in enumerate(captions):
            cached = self._cache.get(caption)
            if cached is not None:
                self._cache.move_to_end(caption)
                ids, nouns, words = cached
                results[i] = ids, CaptionKeys(frozenset(nouns), frozenset(words))
                self.cache_hits += 1
            elif caption in pending:
                pending[caption].append(i)
                self.cache_hits += 1
            else:
                pending[caption] = [i]
        for (caption, positions), found in zip(pending.items(), self._parse(pending), strict=True):
            self._remember(caption, found)
            for i in positions:
                results[i] = found
        return [(list(ids), keys) for ids, keys in results]

    def _parse(self, captions: Iterable[str]) -> Iterator[Found]:
        skip = ["lemmatizer"] if self._noun_lemmatizer is not None else []
        docs = self._nlp.pipe(
            (self.prepare(c) for c in captions),
            batch_size=self._config.spacy_batch_size,
            disable=skip,
        )
        for doc in docs:
            if self._noun_lemmatizer is not None:
                for tok in doc:
                    if tok.pos_ in PAPER_POS and tok.lemma == 0:
                        tok.lemma_ = self._noun_lemmatizer.lemmatize(tok)[0]
            self.captions_parsed += 1
            keys = self._matcher.keys(doc)
            yield tuple(self._matcher.match_keys(keys)), keys

    def _remember(self, caption: str, found: Found) -> None:
        ids, keys = found
        self._cache[caption] = ids, tuple(keys.nouns), tuple(keys.words)
        if len(self._cache) > self._config.caption_cache_size:
            self._cache.popitem(last=False)
