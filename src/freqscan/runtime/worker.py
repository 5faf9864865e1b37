"""The Ray Data adapter of the first stage: read, search and decode one shard per call.

One actor of the CPU pool loads spaCy once in ``__init__`` and then reads one shard per call,
yielding its sample rows in chunks (so a 10,000-image shard never sits in memory whole) and the
shard's outcome row last; see :func:`freqscan.counting.shard.read_shard_rows`. It exports the
read stage's metrics (:class:`freqscan.runtime.metrics.ReadMetrics`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from freqscan.config import SourceConfig, TextConfig
from freqscan.counting.shard import read_shard_rows
from freqscan.image.input import ImageInput
from freqscan.records import ShardInfo
from freqscan.runtime.metrics import ReadMetrics
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
        read_retries: Retries of a shard after a transient storage failure.
        retry_backoff_s: First delay between those retries (doubling).
        run_id: The run, a tag of every metric.
        dataset: The dataset's name, a tag of every metric.
    """

    def __init__(
        self,
        source: SourceConfig,
        text: TextConfig,
        matcher: ConceptMatcher,
        image: ImageInput | None = None,
        *,
        read_retries: int = 3,
        retry_backoff_s: float = 1.0,
        run_id: str = "",
        dataset: str = "",
    ) -> None:
        self._source = source
        self._searcher = TextSearcher(text, matcher)
        self._image = image
        self._retries = read_retries
        self._backoff_s = retry_backoff_s
        self._metrics = ReadMetrics(run_id, dataset)

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        for task in batch.to_pylist():
            rows = read_shard_rows(
                ShardInfo(**task),
                self._source,
                self._searcher.search,
                self._image,
                retries=self._retries,
                backoff_s=self._backoff_s,
            )
            yield from self._metrics.shard(rows)
