"""How text counts move from the `paper` method to `normalized`, on the bundled LAION captions.

Runs TextSearcher with each method over the 10,000 LAION captions and the paper's 4,070 concepts,
then reports total hits, concepts with a count, the concepts that gain or lose most, example
captions per kind of difference, and how many concepts match a caption made of themselves. It also
times the pipeline with all components, with ner off (what freqscan runs) and with parser and ner
off, and counts the captions whose keys differ from the full pipeline's. The numbers in
docs/text-methods.md come from this script.

    .venv/bin/python benchmarks/compare_methods.py [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import pyarrow.parquet as pq
import spacy

from freqscan.concepts import load_concepts
from freqscan.config import DEFAULT_SPACY_BATCH_SIZE, METHODS, TextConfig
from freqscan.text.keys import (
    PluralRules,
    has_html,
    normalized_keys,
    paper_keys,
    strip_html,
)
from freqscan.text.keys import norm as norm_text
from freqscan.text.matcher import ConceptMatcher
from freqscan.text.pipeline import load_pipeline, resolve_pipeline
from freqscan.text.searcher import TextSearcher
from freqscan.text.terms import unigrams

SAMPLE = Path(__file__).parents[1] / "src" / "freqscan" / "data" / "laion-sample"
TOP = 15
EXAMPLES = 4


def captions() -> list[str]:
    files = sorted(SAMPLE.glob("part-*.parquet"))
    return [c for f in files for c in pq.read_table(f, columns=["TEXT"])["TEXT"].to_pylist()]


def synthetic(name: str, template: bool) -> str:
    """A caption made of the concept: "a photo of a golden retriever", or the bare name."""
    text = " ".join(name.replace("_", " ").split())
    if not template:
        return text
    return f"a photo of {'an' if text[0].lower() in 'aeiou' else 'a'} {text}"


class Explainer:
    """Names the rule behind each difference between the two methods (first that applies)."""

    def __init__(self, nlp, matchers: dict[str, ConceptMatcher]) -> None:
        self._nlp = nlp
        self._paper = matchers["paper"]
        self._norm = matchers["normalized"]
        self.parse = lru_cache(maxsize=4096)(nlp)

    def gained(self, caption: str, cid: int) -> str:
        """Why `normalized` counts the caption for the concept and the paper method does not."""
        paper, norm = self._paper, self._norm
        name = norm.name(cid)
        if has_html(caption) and cid not in norm.match_doc(self.parse(caption)):
            return "HTML removed before parsing"
        if name in paper.unmatchable:
            return "concept the paper can never match (digits, quote, bracket)"
        terms = [forms[0] for forms in paper.terms(cid).queries[0].nouns]
        if not set(terms) <= self._forms(cid):
            return "the paper lemmatized the concept into another word (cutting -> cut)"
        keys = {k.lower() for k in paper.keys(self.parse(caption)).nouns}
        missing = [i for i, t in enumerate(terms) if t.lower() not in keys]
        if not missing:
            return "case: capitalised in the caption (Golden -> golden)"
        if any("-" in u for u in unigrams(name)):
            return "hyphenated concept: all its parts, or the joined word"
        if missing[0] < len(terms) - 1:
            return "modifier that is no noun in the caption (golden, of, 1991)"
        doc = self.parse(strip_html(caption))
        lemmas = {norm_text(t.lemma_) for t in doc}
        if terms[-1] in norm.keys(doc).nouns and terms[-1] not in lemmas:
            return "plural proper noun singularised (Dogs -> dog)"
        return "head matched as any word (on, banded; a rare noun tagged ADJ or VERB)"

    def lost(self, caption: str, cid: int) -> str:
        """Why the paper method counts the caption for the concept and `normalized` does not."""
        paper = self._paper
        if any("-" in u for u in unigrams(paper.name(cid))):
            return "hyphenated concept: the paper searched its last part only (T-shirt -> shirt)"
        terms = {forms[0] for forms in paper.terms(cid).queries[0].nouns}
        if not terms <= self._forms(cid):
            return "the paper lemmatized the concept into another word (banded -> band)"
        if has_html(caption) and cid not in paper.match_doc(self.parse(strip_html(caption))):
            return "the paper parsed the HTML markup (words in tags, other tags)"
        exact = {t.lemma_ for t in self.parse(caption) if t.pos_ in ("NOUN", "PROPN")}
        if not terms <= exact:
            return "the paper stripped digits or punctuation from a caption word (winter-2012)"
        return "other"

    def _forms(self, cid: int) -> set[str]:
        """Every form the normalized method searches for the concept."""
        queries = self._norm.terms(cid).queries
        return {f for q in queries for group in q.nouns + q.words for f in group}


def component_costs(texts: list[str], plurals: PluralRules) -> dict[str, dict]:
    """Parse time of the captions, and captions whose keys differ from the full pipeline's."""
    name = resolve_pipeline(None)
    out: dict[str, dict] = {}
    full_keys = None
    variants = {"all": [], "ner off": ["ner"], "parser and ner off": ["parser", "ner"]}
    for label, off in variants.items():
        nlp = spacy.load(name, disable=off)
        start = time.perf_counter()
        keys = [
            (paper_keys(d), normalized_keys(d, plurals))
            for d in nlp.pipe(texts, batch_size=DEFAULT_SPACY_BATCH_SIZE)
        ]
        seconds = time.perf_counter() - start
        full_keys = full_keys or keys
        out[label] = {
            "seconds": round(seconds, 1),
            "paper_keys_differ": sum(a[0] != b[0] for a, b in zip(keys, full_keys, strict=True)),
            "normalized_keys_differ": sum(
                a[1] != b[1] for a, b in zip(keys, full_keys, strict=True)
            ),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    texts = captions()
    concepts = load_concepts()
    nlp = load_pipeline(None)
    matchers = {m: ConceptMatcher.build(concepts, nlp, m) for m in METHODS}
    names = {c.id: c.name for c in concepts}
    ids_of = {c.name: c.id for c in concepts}
    hits: dict[str, list[set[str]]] = {}
    results: dict = {
        "date": datetime.now(UTC).date().isoformat(),
        "captions": len(texts),
        "concepts": len(concepts),
        "html_captions": sum(map(has_html, texts)),
    }
    for method in METHODS:
        searcher = TextSearcher(TextConfig(method=method), matchers[method])
        start = time.perf_counter()
        ids = searcher.search(texts)
        results[method] = {
            "seconds": round(time.perf_counter() - start, 1),
            "cache_hits": searcher.cache_hits,
            "unmatchable": len(matchers[method].unmatchable),
        }
        hits[method] = [{names[i] for i in row} for row in ids]
    results["pipeline"] = searcher.info

    counts = {m: Counter(n for row in hits[m] for n in row) for m in METHODS}
    for m in METHODS:
        results[m] |= {
            "hits": sum(counts[m].values()),
            "captions_with_a_hit": sum(1 for row in hits[m] if row),
            "concepts_counted": len(counts[m]),
        }
    paper, normalized = counts["paper"], counts["normalized"]
    delta = {n: normalized[n] - paper[n] for n in paper | normalized}
    order = sorted(delta, key=lambda n: (delta[n], n))
    results["top_gained"] = [(n, paper[n], normalized[n]) for n in order[::-1][:TOP]]
    results["top_lost"] = [(n, paper[n], normalized[n]) for n in order[:TOP]]
    results["only_paper_counts"] = sorted(n for n in paper if not normalized[n])
    results["only_normalized_counts"] = sum(1 for n in normalized if not paper[n])

    explain = Explainer(nlp, matchers)
    kinds = {"gained": Counter(), "lost": Counter()}
    by_kind = {"gained": defaultdict(Counter), "lost": defaultdict(Counter)}
    examples = {"gained": defaultdict(dict), "lost": defaultdict(dict)}
    for caption, p, n in zip(texts, hits["paper"], hits["normalized"], strict=True):
        for side, diff, why in (("gained", n - p, explain.gained), ("lost", p - n, explain.lost)):
            for concept in sorted(diff):
                kind = why(caption, ids_of[concept])
                kinds[side][kind] += 1
                by_kind[side][kind][concept] += 1
                # one example caption per concept, a few concepts per kind
                if len(examples[side][kind]) < EXAMPLES:
                    examples[side][kind].setdefault(concept, caption[:140])
    results["difference_kinds"] = {side: dict(c.most_common()) for side, c in kinds.items()}
    results["difference_top_concepts"] = {
        side: {kind: c.most_common(6) for kind, c in d.items()} for side, d in by_kind.items()
    }
    results["difference_examples"] = {side: dict(d) for side, d in examples.items()}

    for template in (True, False):
        label = "self_match_template" if template else "self_match_bare"
        docs = list(nlp.pipe(synthetic(c.name, template) for c in concepts))
        results[label] = {}
        for m in METHODS:
            failed = [
                c.name
                for c, d in zip(concepts, docs, strict=True)
                if c.id not in matchers[m].match_doc(d)
            ]
            results[label][m] = {"matched": len(concepts) - len(failed)}
            if m == "normalized":
                results[label][m]["failed"] = failed

    results["components"] = component_costs(texts, PluralRules.from_pipeline(nlp))

    print(json.dumps(results, indent=1, ensure_ascii=False))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
