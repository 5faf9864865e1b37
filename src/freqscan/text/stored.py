"""StoredKeysSearch: a shard's captions answered from the caption keys a count kept, unparsed.

``freqscan add-concepts`` on a tagged run reads the shards again for their images only: the text
side of each sample comes from the keys its caption had when the run parsed it (the
``caption_keys`` table), matched against the enlarged concept set. No spaCy is loaded. The keys
of a caption are a function of the caption and the pipeline, so this gives exactly the ids a
parse would, as long as the shard is the one the keys were kept from; a counted sample without
stored keys means it is not, and fails the shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from freqscan.records import Sample, ShardReadError
from freqscan.text.keys import CaptionKeys

if TYPE_CHECKING:
    from freqscan.text.matcher import ConceptMatcher

# A counted sample of the shard has no stored keys: the shard is not the one they were kept from.
KEYS_MISSING = "caption_keys_missing"


class StoredKeysSearch:
    """A reader's ``Search`` over one shard's stored caption keys.

    Args:
        keys: The shard's caption keys (schema ``CAPTION_KEYS``).
        matcher: The concepts to match them against.
    """

    def __init__(self, keys: pa.Table, matcher: ConceptMatcher) -> None:
        self._matcher = matcher
        self._keys = {
            key: CaptionKeys(frozenset(nouns), frozenset(words))
            for key, nouns, words in zip(
                keys.column("key").to_pylist(),
                keys.column("nouns").to_pylist(),
                keys.column("words").to_pylist(),
                strict=True,
            )
        }

    @classmethod
    def open(cls, uri: str, matcher: ConceptMatcher) -> StoredKeysSearch:
        """Load a shard's caption keys file (local path or fsspec URL)."""
        fs, path = fsspec.core.url_to_fs(uri)
        with fs.open(path, "rb") as fh:
            return cls(pq.read_table(fh, columns=["key", "nouns", "words"]), matcher)

    def __call__(self, samples: Sequence[Sample]) -> list[tuple[list[int], CaptionKeys]]:
        found = []
        for sample in samples:
            keys = self._keys.get(sample.key)
            if keys is None:
                raise ShardReadError(
                    KEYS_MISSING,
                    f"sample {sample.key!r} has no stored caption keys: the shard is not the one "
                    "the run counted; `freqscan recount` counts its new content",
                )
            found.append((list(self._matcher.match_keys(keys)), keys))
        return found
