"""The Ray Data adapter of the first stage: read, search and decode one shard per call.

One actor of the CPU pool loads spaCy once in ``__init__`` and then reads one shard per call,
yielding its sample rows in chunks (so a 10,000-image shard never sits in memory whole) and the
shard's outcome row last; see :func:`freqscan.counting.shard.read_shard_rows`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from freqscan.config import SourceConfig, TextConfig
from freqscan.counting.shard import read_shard_rows
from freqscan.image.input import ImageInput
from freqscan.records import ShardInfo
from freqscan.text.matcher import ConceptMatcher
from freqscan.text.searcher import TextSearcher

# What the planner sends per shard.
SHARD_TASK = pa.schema(
    [("path", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()), ("etag", pa.string())]
)


class ShardReadWorker:
    """Callable class for ``Dataset.map_batches`` on a CPU actor pool.

    Args:
        source: How to read shards.
        text: Text search settings.
        matcher: The concept matcher built once on the driver.
        image: The tagger's preprocessing, or ``None`` when the run tags no images.
    """

    def __init__(
        self,
        source: SourceConfig,
        text: TextConfig,
        matcher: ConceptMatcher,
        image: ImageInput | None = None,
    ) -> None:
        self._source = source
        self._searcher = TextSearcher(text, matcher)
        self._image = image

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        for task in batch.to_pylist():
            yield from read_shard_rows(
                ShardInfo(**task), self._source, self._searcher.search, self._image
            )
