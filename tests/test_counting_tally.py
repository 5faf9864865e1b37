"""The paper's counting definitions on hand-made samples whose answers are known.

text count: the caption counts for c; image count at t: the image scores c strictly above t;
integrated: text AND image; misaligned: text and image both non-empty and disjoint.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from freqscan.config import THRESHOLD_GRID
from freqscan.counting.tally import ShardTally, Thresholds, tally
from freqscan.runtime.tagging import scores_above_floor
from freqscan.tables.build import merge, misalignment_degree

DOG, CAT, CAR, TREE = 11, 22, 33, 44
F32_07 = float(np.float32(0.7))  # 0.699999988..., the float32 nearest to 0.7, is below 0.7
F32_07_UP = float(np.nextafter(np.float32(0.7), np.float32(1)))  # 0.70000005


def test_a_score_equal_to_the_threshold_does_not_count():
    th = Thresholds(default=0.7, floor=0.5)
    out = tally(
        [[], [], []],
        [[DOG], [DOG], [DOG]],
        [[0.7], [0.7000001], [0.6999999]],
        th,
    )
    assert out.image == Counter({DOG: 1})
    # At grid 0.7 too; at 0.65 all three count, at 0.75 none.
    assert out.image_grid[0.7] == Counter({DOG: 1})
    assert out.image_grid[0.65] == Counter({DOG: 3})
    assert out.image_grid[0.75] == Counter()
    # A score of exactly 0.5 is stored (>= floor) but never counts (> 0.5 is needed).
    out = tally([[]], [[DOG]], [[0.5]], th)
    assert out.image_grid[0.5] == Counter() and out.image_grid[0.55] == Counter()


def test_text_image_integrated_and_misalignment_on_known_samples():
    th = Thresholds(default=0.7, floor=0.5)
    text = [
        [DOG],  # 0: image agrees -> integrated dog
        [DOG, CAT],  # 1: image shows cat only -> integrated cat, not misaligned
        [CAR],  # 2: image shows dog only -> misaligned
        [TREE],  # 3: image scores below 0.7 -> shows nothing: not text_and_image
        [],  # 4: no caption hit, image shows dog
        [CAT],  # 5: no image at all
        [CAR],  # 6: image decoded, nothing at or above the floor (empty list)
    ]
    image = [[DOG], [CAT, DOG], [DOG, CAR], [TREE], [DOG], None, []]
    scores = [[0.9], [0.8, 0.6], [0.95, 0.55], [0.65], [0.71], None, []]
    out = tally(text, image, scores, th)
    assert out.text == Counter({DOG: 2, CAT: 2, CAR: 2, TREE: 1})
    assert out.image == Counter({DOG: 3, CAT: 1})
    assert out.integrated == Counter({DOG: 1, CAT: 1})
    assert out.text_and_image == 3  # samples 0, 1, 2
    assert out.misaligned == 1  # sample 2
    # Grid counts use the same rule at each grid value.
    assert out.image_grid[0.5] == Counter({DOG: 4, CAT: 1, CAR: 1, TREE: 1})
    assert out.integrated_grid[0.5] == Counter({DOG: 2, CAT: 1, CAR: 1, TREE: 1})
    assert out.image_grid[0.6] == Counter({DOG: 3, CAT: 1, TREE: 1})
    assert out.integrated_grid[0.6] == Counter({DOG: 1, CAT: 1, TREE: 1})
    assert out.image_grid[0.9] == Counter({DOG: 1})
    assert out.integrated_grid[0.9] == Counter()
    # Integrated never exceeds text or image, at the run threshold and at every grid value.
    for c in (DOG, CAT, CAR, TREE):
        assert out.integrated[c] <= min(out.text[c], out.image[c])
        for t in th.known_grid:
            assert out.integrated_grid[t][c] <= min(out.text[c], out.image_grid[t][c])


def test_a_caption_counts_each_concept_once_per_sample():
    out = tally([[DOG, DOG]], [[DOG, DOG]], [[0.9, 0.9]], Thresholds(0.7, 0.5))
    assert out.text == Counter({DOG: 1}) and out.image == Counter({DOG: 1})
    assert out.integrated == Counter({DOG: 1})


def test_samples_without_images_count_for_text_only():
    th = Thresholds(0.7, 0.5)
    out = tally([[DOG], [CAT], None], [None, [], None], [None, [], None], th)
    assert out.text == Counter({DOG: 1, CAT: 1})
    assert out.image == Counter() and out.integrated == Counter()
    assert out.text_and_image == 0 and out.misaligned == 0
    assert set(out.image_grid) == set(THRESHOLD_GRID)
    assert all(not c for c in out.image_grid.values())


def test_a_run_without_images_has_no_image_counts_and_no_grid():
    out = tally([[DOG], [DOG, CAT]], [None, None], [None, None], None)
    assert out.text == Counter({DOG: 2, CAT: 1})
    assert out.image == Counter() and out.image_grid == {} and out.integrated_grid == {}
    assert out.text_and_image == 0 and out.misaligned == 0
    # Even stray image ids are ignored without thresholds.
    out = tally([[DOG]], [[DOG]], [[0.99]], None)
    assert out.image == Counter() and out.integrated == Counter()


def test_per_concept_thresholds_closed_set():
    th = Thresholds(default=0.7, floor=0.45, per_concept={DOG: 0.9, CAT: 0.45, CAR: 0.65})
    assert th.of(DOG) == 0.9 and th.of(CAT) == 0.45 and th.of(TREE) == 0.7
    out = tally(
        [[DOG, CAT, CAR, TREE]],
        [[DOG, CAT, CAR, TREE]],
        [[0.85, 0.46, 0.66, 0.69]],
        th,
    )
    # dog 0.85 <= 0.9, cat 0.46 > 0.45, car 0.66 > 0.65, tree 0.69 <= 0.7 (default).
    assert out.image == Counter({CAT: 1, CAR: 1})
    assert out.integrated == Counter({CAT: 1, CAR: 1})
    # The grid ignores per-concept thresholds: one value for every concept.
    assert out.image_grid[0.65] == Counter({DOG: 1, CAR: 1, TREE: 1})
    assert th.known_grid == THRESHOLD_GRID  # floor 0.45 is below the whole grid


def test_misalignment_uses_the_per_concept_thresholds():
    th = Thresholds(default=0.7, floor=0.5, per_concept={DOG: 0.9})
    # Text says dog; image scores dog 0.8 (below dog's 0.9) and car 0.8 (above 0.7).
    out = tally([[DOG]], [[DOG, CAR]], [[0.8, 0.8]], th)
    assert out.image == Counter({CAR: 1}) and out.integrated == Counter()
    assert (out.text_and_image, out.misaligned) == (1, 1)
    # With the default threshold for dog, the sample is aligned.
    out = tally([[DOG]], [[DOG, CAR]], [[0.8, 0.8]], Thresholds(0.7, 0.5))
    assert out.integrated == Counter({DOG: 1}) and (out.text_and_image, out.misaligned) == (1, 0)


@pytest.mark.parametrize(
    ("floor", "grid"),
    [
        (0.5, THRESHOLD_GRID),
        (0.45, THRESHOLD_GRID),
        (0.6, (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)),
        (0.62, (0.65, 0.7, 0.75, 0.8, 0.85, 0.9)),
        (0.9, (0.9,)),
    ],
)
def test_grid_values_below_the_floor_are_absent(floor, grid):
    th = Thresholds(default=0.9, floor=floor)
    assert th.known_grid == grid
    out = tally([[DOG]], [[DOG]], [[0.95]], th)
    assert tuple(out.image_grid) == grid and tuple(out.integrated_grid) == grid
    assert all(out.image_grid[t] == Counter({DOG: 1}) for t in grid)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"default": 0.4, "floor": 0.5},
        {"default": 0.7, "floor": 0.5, "per_concept": {DOG: 0.8, CAT: 0.49}},
        {"default": 0.5, "floor": 0.5000001},
    ],
)
def test_thresholds_refuse_a_threshold_below_the_floor(kwargs):
    with pytest.raises(ValueError, match="below the score floor"):
        Thresholds(**kwargs)


def test_a_threshold_equal_to_the_floor_is_allowed():
    th = Thresholds(default=0.5, floor=0.5, per_concept={DOG: 0.5})
    assert th.of(DOG) == 0.5 and th.known_grid == THRESHOLD_GRID


def test_merge_sums_shard_tallies():
    th = Thresholds(0.7, 0.5)
    a = tally([[DOG], [CAR]], [[DOG], [DOG]], [[0.9], [0.8]], th)
    b = tally([[DOG, CAT], [TREE]], [[CAT], None], [[0.75], None], th)
    c = tally([[CAT]], [None], [None], None)  # no grid at all
    total = merge([a, b, c])
    both = tally(
        [[DOG], [CAR], [DOG, CAT], [TREE], [CAT]],
        [[DOG], [DOG], [CAT], None, None],
        [[0.9], [0.8], [0.75], None, None],
        th,
    )
    assert total.text == both.text == Counter({DOG: 2, CAT: 2, CAR: 1, TREE: 1})
    assert total.image == both.image == Counter({DOG: 2, CAT: 1})
    assert total.integrated == both.integrated == Counter({DOG: 1, CAT: 1})
    assert total.image_grid == both.image_grid
    assert total.integrated_grid == both.integrated_grid
    assert (total.text_and_image, total.misaligned) == (3, 1) == (both.text_and_image, 1)
    assert misalignment_degree(total, 5) == pytest.approx(1 / 5)
    assert misalignment_degree(total, 0) is None
    assert merge([]) == ShardTally()
    # merge does not modify its inputs.
    assert a.text == Counter({DOG: 1, CAR: 1}) and a.image_grid[0.5] == Counter({DOG: 2})


def test_float32_scores_at_a_threshold_compare_as_float64_in_both_places():
    # np.float32(0.7) is 0.699999988: not stored at floor 0.7 and not counted at 0.7; its
    # float32 neighbour above is both. The same holds for scores read back from Arrow float32.
    probs = np.array([[np.float32(0.7), F32_07_UP, np.float32(0.69)]], dtype=np.float32)
    ids, scores = scores_above_floor(probs, np.array([DOG, CAT, CAR]), 0.7)
    assert ids.to_pylist() == [[CAT]] and scores.to_pylist() == [[F32_07_UP]]

    th = Thresholds(0.7, 0.7)
    stored = tally([[]], ids.to_pylist(), scores.to_pylist(), th)
    unfiltered = tally([[]], [[DOG, CAT, CAR]], [probs[0].tolist()], th)
    assert stored.image == unfiltered.image == Counter({CAT: 1})
    # float32 nearest to 0.55 is 0.550000012 > 0.55: it is stored at floor 0.55 and counted.
    arrow = pa.array([[np.float32(0.55)], [np.float32(0.7)]], pa.list_(pa.float32()))
    out = tally([[], []], [[DOG], [DOG]], arrow.to_pylist(), Thresholds(0.7, 0.55))
    assert out.image_grid[0.55] == Counter({DOG: 2}) and out.image_grid[0.6] == Counter({DOG: 1})
    assert out.image_grid[0.7] == Counter() and out.image == Counter()
    kept, _ = scores_above_floor(np.array([[np.float32(0.55)]]), np.array([DOG]), 0.55)
    assert kept.to_pylist() == [[DOG]]


def test_counts_from_floor_filtered_scores_equal_counts_from_all_scores():
    """Storing only scores >= floor never changes a count at any threshold >= floor, including
    float32 scores sitting right at a grid value."""
    rng = np.random.default_rng(0)
    near = []
    for t in THRESHOLD_GRID:
        f = np.float32(t)
        near += [f, np.nextafter(f, np.float32(0)), np.nextafter(f, np.float32(1))]
    probs = rng.random((40, 12), dtype=np.float32)
    probs.flat[: len(near)] = near
    concept_ids = np.arange(100, 112, dtype=np.int64)
    text = [[int(i) for i in rng.choice(concept_ids, 2, replace=False)] for _ in range(40)]
    for floor in (0.5, 0.55, 0.7):
        ids, scores = scores_above_floor(probs, concept_ids, floor)
        assert all(s >= floor for row in scores.to_pylist() for s in row)
        for default in [t for t in THRESHOLD_GRID if t >= floor]:
            th = Thresholds(default, floor)
            stored = tally(text, ids.to_pylist(), scores.to_pylist(), th)
            everything = tally(text, [concept_ids.tolist()] * 40, probs.tolist(), th)
            assert stored == everything, (floor, default)
