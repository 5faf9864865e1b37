"""The Ray Data adapter of the first stage: read, search and decode one shard per call.

One actor of the CPU pool loads spaCy once in ``__init__`` and then reads one shard per call,
yielding its sample rows in chunks (so a 10,000-image shard never sits in memory whole) and the
shard's outcome row last; see :func:`freqscan.counting.shard.read_shard_rows`. It writes each
read shard's caption keys into ``OUT/caption_keys/`` itself (the driver only commits the file) and
exports the read stage's metrics (:class:`freqscan.runtime.metrics.ReadMetrics`).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pyarrow as pa

from freqscan.config import SourceConfig, TextConfig
from freqscan.counting.shard import read_shard_rows
from freqscan.image.input import ImageInput
from freqscan.records import ShardInfo
from freqscan.runtime.metrics import ReadMetrics
from freqscan.tables.store import write_data_file
from freqscan.text.matcher import ConceptMatcher
from freqscan.text.searcher import TextSearcher
from freqscan.text.stored import StoredKeysSearch

# What the planner sends per shard; `caption_keys` (add-concepts) is the URI of the shard's
# stored caption keys, answered instead of parsing its captions.
SHARD_TASK = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.int64()),
        ("mtime", pa.float64()),
        ("etag", pa.string()),
        ("caption_keys", pa.string()),
    ]
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
        run_id: The run, a tag of every metric and part of the caption keys files' names.
        dataset: The dataset's name, a tag of every metric.
        out: The output directory the caption keys files go to; ``None`` keeps no keys.
        stored_keys: Every task names its shard's stored caption keys, matched instead of
            parsing the captions: no spaCy is loaded.
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
        out: str | None = None,
        stored_keys: bool = False,
    ) -> None:
        self._source = source
        self._matcher = matcher
        self._searcher = None if stored_keys else TextSearcher(text, matcher)
        self._image = image
        self._retries = read_retries
        self._backoff_s = retry_backoff_s
        self._metrics = ReadMetrics(run_id, dataset)
        self._run_id = run_id
        self._out = out

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        # Imported here: the pipeline imports this module. A shard's caption keys file is named
        # like its hits file, so a retried shard overwrites its own.
        from freqscan.runtime.pipeline import hits_filename

        for task in batch.to_pylist():
            stored = task.pop("caption_keys", None)
            search = (
                self._searcher.search_samples
                if self._searcher is not None
                else StoredKeysSearch.open(stored, self._matcher)
            )
            write_keys = (
                partial(
                    write_data_file,
                    self._out,
                    "caption_keys",
                    hits_filename(self._run_id, task["path"]),
                )
                if self._out is not None
                else None
            )
            rows = read_shard_rows(
                ShardInfo(**task),
                self._source,
                search,
                self._image,
                retries=self._retries,
                backoff_s=self._backoff_s,
                write_keys=write_keys,
            )
            yield from self._metrics.shard(rows)
