"""Synthesis of nMNIST examples: Pawlowski et al. 2019, §2.1 and Appendix A.1.

A positive canvas holds exactly one digit 3 (the needle) and `num_clutter`
other digits; a negative holds `num_clutter + 1` other digits. Digits keep
their 28x28 size, land uniformly at random fully inside the canvas and are
composited by adding and clipping at 255, so clutter may overlap the needle.

Example `k` of a split is a pure function of (layout, pool, k): its random
generator is seeded from (seed, canvas size, clutter count, split, k), so any
example can be regenerated alone and a build does not depend on parallelism.

Pure NumPy, no TensorFlow: this module runs in generation worker processes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .png import encode_gray_png

DIGIT_SIZE = 28
NEEDLE_DIGIT = 3


def object_to_image(canvas_size: int) -> float:
    """O2I: a needle's box area over the canvas area, DIGIT_SIZE² / canvas_size²."""
    return DIGIT_SIZE**2 / canvas_size**2


@dataclasses.dataclass(frozen=True)
class DigitPool:
    """The MNIST digits one split may use.

    `images` and `labels` are a whole MNIST source file; `needles` and
    `clutter` are the source indices (ascending) of the 3s and of the other
    digits in the split's index range, so no digit crosses splits.
    """

    images: np.ndarray
    labels: np.ndarray
    needles: np.ndarray
    clutter: np.ndarray

    @classmethod
    def from_range(cls, images: np.ndarray, labels: np.ndarray, start: int, stop: int):
        indices = np.arange(start, stop)
        is_needle = labels[start:stop] == NEEDLE_DIGIT
        return cls(images, labels, indices[is_needle], indices[~is_needle])

    def num_examples(self, repeats: int) -> int:
        """One positive per use of each 3, balanced by as many negatives."""
        return 2 * repeats * len(self.needles)


@dataclasses.dataclass(frozen=True)
class Layout:
    """What, besides the digit pool, fixes every pixel of a split's examples."""

    canvas_size: int
    num_clutter: int
    seed: int
    split_key: int

    @property
    def o2i(self) -> float:
        """Needle box area over canvas area: 784 / canvas_size²."""
        return object_to_image(self.canvas_size)


@dataclasses.dataclass(frozen=True)
class Example:
    """One composed canvas. For a positive, object 0 is the needle."""

    image: np.ndarray  # (S, S) uint8
    label: int  # 1: a 3 is present
    corners: np.ndarray  # (n, 2) int: top-left (row, col) of every placed digit
    sources: np.ndarray  # (n,) int: MNIST index of every placed digit
    digits: np.ndarray  # (n,) int: digit class of every placed digit
    needle_mask: np.ndarray  # (S, S) bool: pixels where the needle digit is non-zero


def compose(layout: Layout, pool: DigitPool, k: int) -> Example:
    """Composes example `k` of a split (even k: positive k // 2, odd k: its negative)."""
    rng = np.random.default_rng(
        [layout.seed, layout.canvas_size, layout.num_clutter, layout.split_key, k]
    )
    size, positive = layout.canvas_size, k % 2 == 0
    num_digits = layout.num_clutter + 1
    clutter = pool.clutter[rng.integers(0, len(pool.clutter), num_digits - positive)]
    if positive:
        needle = pool.needles[(k // 2) % len(pool.needles)]
        sources = np.concatenate([[needle], clutter])
    else:
        sources = clutter
    corners = rng.integers(0, size - DIGIT_SIZE + 1, size=(num_digits, 2))

    canvas = np.zeros((size, size), np.uint16)
    for (row, col), source in zip(corners.tolist(), sources.tolist(), strict=True):
        canvas[row : row + DIGIT_SIZE, col : col + DIGIT_SIZE] += pool.images[source]
    np.minimum(canvas, 255, out=canvas)

    needle_mask = np.zeros((size, size), bool)
    if positive:
        row, col = corners[0]
        needle_mask[row : row + DIGIT_SIZE, col : col + DIGIT_SIZE] = pool.images[sources[0]] > 0
    return Example(
        image=canvas.astype(np.uint8),
        label=int(positive),
        corners=corners,
        sources=sources,
        digits=pool.labels[sources].astype(np.int64),
        needle_mask=needle_mask,
    )


def normalized_boxes(corners: np.ndarray, canvas_size: int) -> np.ndarray:
    """(n, 2) top-left corners -> (n, 4) [ymin, xmin, ymax, xmax] in [0, 1] (TFDS BBox)."""
    boxes = np.concatenate([corners, corners + DIGIT_SIZE], axis=1)
    return (boxes / canvas_size).astype(np.float32)


def to_features(example: Example, layout: Layout) -> dict:
    """The TFDS feature dict of an example, images already PNG-encoded.

    A negative's `needle_bbox` is the empty box (0, 0, 0, 0) and its `o2i` is 0.
    """
    boxes = normalized_boxes(example.corners, layout.canvas_size)
    return {
        "image": encode_gray_png(example.image),
        "label": example.label,
        "needle_bbox": boxes[0] if example.label else np.zeros(4, np.float32),
        "needle_mask": encode_gray_png(example.needle_mask.view(np.uint8)),
        "objects": {
            "bbox": boxes,
            "digit": example.digits,
            "mnist_index": example.sources.astype(np.int32),
        },
        "o2i": np.float32(layout.o2i if example.label else 0.0),
    }


def render(layout: Layout, pool: DigitPool, k: int) -> dict:
    """Example `k` of a split as TFDS features."""
    return to_features(compose(layout, pool, k), layout)


@dataclasses.dataclass(frozen=True)
class ManyNeedlesLayout:
    """A many-needles split: every canvas holds between `min_needles` and `max_needles`
    digits 3 among `num_clutter` other digits, and the task is to find all of them."""

    canvas_size: int
    min_needles: int
    max_needles: int
    num_clutter: int
    seed: int
    split_key: int

    def num_examples(self, pool: DigitPool, uses: int) -> int:
        """As many canvases as use each 3 of the pool about `uses` times (at least one)."""
        mean_needles = (self.min_needles + self.max_needles) / 2
        return max(1, round(uses * len(pool.needles) / mean_needles))


@dataclasses.dataclass(frozen=True)
class ManyNeedlesExample:
    """A canvas with many needles; objects [0, n) are the needles."""

    image: np.ndarray  # (S, S) uint8
    corners: np.ndarray  # (n + clutter, 2) int: top-left (row, col) of every placed digit
    sources: np.ndarray  # (n + clutter,) int: MNIST index of every placed digit
    digits: np.ndarray  # (n + clutter,) int
    num_needles: int
    # (n,) int: the needles in a random order; a fraction f of the needles is annotated by
    # those of rank < ceil(f * n), so smaller fractions are subsets of larger ones
    annotation_rank: np.ndarray
    needle_mask: np.ndarray  # (S, S) bool: pixels where any needle is non-zero


def compose_many(layout: ManyNeedlesLayout, pool: DigitPool, k: int) -> ManyNeedlesExample:
    """Composes canvas `k` of a many-needles split: a pure function of (layout, pool, k)."""
    rng = np.random.default_rng(
        [layout.seed, layout.canvas_size, layout.max_needles, layout.split_key, k]
    )
    size = layout.canvas_size
    num_needles = int(rng.integers(layout.min_needles, layout.max_needles + 1))
    needles = pool.needles[rng.integers(0, len(pool.needles), num_needles)]
    clutter = pool.clutter[rng.integers(0, len(pool.clutter), layout.num_clutter)]
    sources = np.concatenate([needles, clutter])
    corners = rng.integers(0, size - DIGIT_SIZE + 1, size=(len(sources), 2))
    annotation_rank = rng.permutation(num_needles)

    canvas = np.zeros((size, size), np.uint16)
    needle_mask = np.zeros((size, size), bool)
    for index, ((row, col), source) in enumerate(
        zip(corners.tolist(), sources.tolist(), strict=True)
    ):
        canvas[row : row + DIGIT_SIZE, col : col + DIGIT_SIZE] += pool.images[source]
        if index < num_needles:
            needle_mask[row : row + DIGIT_SIZE, col : col + DIGIT_SIZE] |= pool.images[source] > 0
    np.minimum(canvas, 255, out=canvas)
    return ManyNeedlesExample(
        image=canvas.astype(np.uint8),
        corners=corners,
        sources=sources,
        digits=pool.labels[sources].astype(np.int64),
        num_needles=num_needles,
        annotation_rank=annotation_rank.astype(np.int32),
        needle_mask=needle_mask,
    )


def render_many(layout: ManyNeedlesLayout, pool: DigitPool, k: int) -> dict:
    """Canvas `k` of a many-needles split as TFDS features."""
    example = compose_many(layout, pool, k)
    boxes = normalized_boxes(example.corners, layout.canvas_size)
    return {
        "image": encode_gray_png(example.image),
        "label": 1,
        "needle_mask": encode_gray_png(example.needle_mask.view(np.uint8)),
        "needles": {
            "bbox": boxes[: example.num_needles],
            "annotation_rank": example.annotation_rank,
        },
        "objects": {
            "bbox": boxes,
            "digit": example.digits,
            "mnist_index": example.sources.astype(np.int32),
        },
        "o2i": np.float32(object_to_image(layout.canvas_size)),
    }
