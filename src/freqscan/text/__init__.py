"""Text search: which concepts a caption mentions, under the ``paper`` or ``normalized`` method.

Pure Python on spaCy, no Ray: the driver loads a pipeline and builds a :class:`ConceptMatcher`
once; each worker holds a :class:`TextSearcher` that parses captions and matches them.
docs/text-methods.md describes both methods.
"""

from freqscan.text.keys import CaptionKeys, has_html, strip_html
from freqscan.text.matcher import ConceptMatcher
from freqscan.text.pipeline import (
    SpacyPipelineError,
    load_pipeline,
    pipeline_info,
    resolve_pipeline,
)
from freqscan.text.searcher import TextSearcher
from freqscan.text.terms import ConceptTerms, Query

__all__ = [
    "CaptionKeys",
    "ConceptMatcher",
    "ConceptTerms",
    "Query",
    "SpacyPipelineError",
    "TextSearcher",
    "has_html",
    "load_pipeline",
    "pipeline_info",
    "resolve_pipeline",
    "strip_html",
]
