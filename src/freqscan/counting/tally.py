"""Per-shard counts from per-sample concept ids and image scores: the paper's definitions.

- text count of c: samples whose caption counts for c;
- image count of c at threshold t: samples whose image scores c strictly above t;
- integrated count of c at t: samples that count for c in text AND image (the paper's headline);
- misaligned samples at t: text and image each have at least one concept, yet share none
  (misalignment degree = misaligned samples / samples scanned, summed over shards first).

:func:`tally` is the readable specification, one sample at a time. A count run and ``freqscan
rethreshold`` both count with :func:`~freqscan.counting.reduce.tally_columns`, its vectorised
equal, on the same stored float32 scores, so re-thresholding gives exactly what a fresh run at
that threshold gives.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from freqscan.config import THRESHOLD_GRID, ConfigError


@dataclass(frozen=True)
class Thresholds:
    """The decision thresholds of a run.

    Args:
        default: Threshold of every concept not in ``per_concept``.
        floor: Scores at or above it are stored; thresholds below it cannot be applied.
        per_concept: Concept id -> its own threshold (RAM++ closed set), if any.
        grid: Thresholds at which counts are also reported; grid values below the floor are
            left out (their counts are unknowable from the stored scores).
    """

    default: float
    floor: float
    per_concept: Mapping[int, float] = field(default_factory=dict)
    grid: tuple[float, ...] = THRESHOLD_GRID

    def __post_init__(self) -> None:
        low = min([self.default, *self.per_concept.values()])
        if low < self.floor:
            raise ConfigError(
                f"threshold {low} is below the score floor {self.floor}: scores under the floor "
                "are not stored, so that count would be wrong"
            )

    def of(self, concept_id: int) -> float:
        return self.per_concept.get(concept_id, self.default)

    @property
    def known_grid(self) -> tuple[float, ...]:
        return tuple(t for t in self.grid if t >= self.floor)


@dataclass
class ShardTally:
    """Counts of one shard (or, summed, of a run)."""

    text: Counter[int] = field(default_factory=Counter)
    image: Counter[int] = field(default_factory=Counter)
    integrated: Counter[int] = field(default_factory=Counter)
    image_grid: dict[float, Counter[int]] = field(default_factory=dict)
    integrated_grid: dict[float, Counter[int]] = field(default_factory=dict)
    text_and_image: int = 0
    misaligned: int = 0


def tally(
    text_ids: Sequence[Sequence[int] | None],
    image_ids: Sequence[Sequence[int] | None],
    image_scores: Sequence[Sequence[float] | None],
    thresholds: Thresholds | None,
) -> ShardTally:
    """Count one shard's samples.

    Args:
        text_ids: Per sample, the concepts its caption counts for.
        image_ids: Per sample, the concepts its image scored at or above the floor (``None`` or
            empty when it has no usable image, or when the run tags no images).
        image_scores: The matching float32 scores.
        thresholds: The run's thresholds; ``None`` when the run tags no images.
    """
    out = ShardTally()
    grid = thresholds.known_grid if thresholds is not None else ()
    out.image_grid = {t: Counter() for t in grid}
    out.integrated_grid = {t: Counter() for t in grid}
    for text, ids, scores in zip(text_ids, image_ids, image_scores, strict=True):
        text_set = set(text or ())
        out.text.update(text_set)
        if thresholds is None or not ids:
            continue
        pairs = list(zip(ids, scores, strict=True))
        shown = {i for i, s in pairs if float(s) > thresholds.of(i)}
        out.image.update(shown)
        both = text_set & shown
        out.integrated.update(both)
        if text_set and shown:
            out.text_and_image += 1
            out.misaligned += not both
        for t in grid:
            at_t = {i for i, s in pairs if float(s) > t}
            out.image_grid[t].update(at_t)
            out.integrated_grid[t].update(text_set & at_t)
    return out


def tally_to_dict(t: ShardTally) -> dict[str, Any]:
    """JSON-ready form of a tally (counter keys become strings, as JSON requires)."""

    def counts(c: Counter[int]) -> dict[str, int]:
        return {str(k): v for k, v in sorted(c.items())}

    return {
        "text": counts(t.text),
        "image": counts(t.image),
        "integrated": counts(t.integrated),
        "image_grid": {repr(k): counts(v) for k, v in t.image_grid.items()},
        "integrated_grid": {repr(k): counts(v) for k, v in t.integrated_grid.items()},
        "text_and_image": t.text_and_image,
        "misaligned": t.misaligned,
    }


def tally_from_dict(d: Mapping[str, Any]) -> ShardTally:
    """Inverse of :func:`tally_to_dict`."""

    def counts(c: Mapping[str, int]) -> Counter[int]:
        return Counter({int(k): v for k, v in c.items()})

    return ShardTally(
        text=counts(d["text"]),
        image=counts(d["image"]),
        integrated=counts(d["integrated"]),
        image_grid={float(k): counts(v) for k, v in d["image_grid"].items()},
        integrated_grid={float(k): counts(v) for k, v in d["integrated_grid"].items()},
        text_and_image=d["text_and_image"],
        misaligned=d["misaligned"],
    )
