"""Lesion masks at one pyramid level, contiguous lesions, and crops with a controlled O2I.

Pawlowski et al. 2019 App. A.2: "for positive examples, we identify contiguous regions within
the annotations, and take 50 random crops around each contiguous region ensuring
that the full contiguous region is inside the crop, and total number of lesion
pixels inside the crop are in the desired O2I ratio". Masks are rasterized window
by window, never for a whole slide level.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from skimage import draw, measure

from .annotations import Annotations


@dataclasses.dataclass(frozen=True)
class Lesion:
    """A contiguous lesion: (top, left, bottom, right) bounds (bottom/right exclusive), pixels."""

    bounds: tuple[int, int, int, int]
    area: int


@dataclasses.dataclass(frozen=True)
class Crop:
    """A square crop at the mask's level: its top-left corner, side and lesion fraction."""

    top: int
    left: int
    size: int
    o2i: float


class LesionMask:
    """Lesion pixels (lesions minus exclusions) of one slide at one level, by window."""

    def __init__(self, annotations: Annotations, downsample: float, level_shape: tuple[int, int]):
        # Level pixel (r, c) covers [c, c + 1) x [r, r + 1); skimage fills the integer
        # points inside a polygon, so vertices shift by half a pixel to test pixel centres.
        self.lesions = [p / downsample - 0.5 for p in annotations.lesions]
        self.exclusions = [p / downsample - 0.5 for p in annotations.exclusions]
        self.shape = level_shape
        self._bounds = [_polygon_bounds(p) for p in self.lesions]
        self._exclusion_bounds = [_polygon_bounds(p) for p in self.exclusions]

    def window(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """(height, width) bool: lesion pixels of the window at (top, left)."""
        mask = np.zeros((height, width), bool)
        box = (top, left, top + height, left + width)
        for polygon, bounds in zip(self.lesions, self._bounds, strict=True):
            if _overlap(bounds, box):
                mask[_fill(polygon, top, left, height, width)] = True
        for polygon, bounds in zip(self.exclusions, self._exclusion_bounds, strict=True):
            if _overlap(bounds, box):
                mask[_fill(polygon, top, left, height, width)] = False
        return mask

    def contiguous_lesions(self) -> list[Lesion]:
        """Connected components (8-connected) of the lesion pixels, in a fixed order."""
        lesions = []
        for top, left, bottom, right in _clusters(self._bounds, self.shape):
            labels = measure.label(
                self.window(top, left, bottom - top, right - left), connectivity=2
            )
            for region in measure.regionprops(labels):
                r0, c0, r1, c1 = region.bbox
                lesions.append(Lesion((top + r0, left + c0, top + r1, left + c1), int(region.area)))
        return sorted(lesions, key=lambda lesion: lesion.bounds)

    def crops_around(
        self,
        lesion: Lesion,
        size: int,
        o2i_range: tuple[float, float],
        rng: np.random.Generator,
        attempts: int = 50,
    ) -> list[Crop]:
        """Up to `attempts` random crops holding all of `lesion`, kept when their O2I is in range.

        The O2I counts every lesion pixel in the crop. Repeated positions are kept once.
        """
        top, left, bottom, right = lesion.bounds
        height, width = self.shape
        rows = (max(0, bottom - size), min(top, height - size))
        columns = (max(0, right - size), min(left, width - size))
        if rows[0] > rows[1] or columns[0] > columns[1]:
            return []  # the lesion is larger than the crop, or the slide smaller
        window_top, window_left = rows[0], columns[0]
        mask = self.window(
            window_top, window_left, rows[1] - rows[0] + size, columns[1] - columns[0] + size
        )
        counts = np.pad(mask.cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # summed-area table
        low, high = o2i_range
        crops, seen = [], set()
        for _ in range(attempts):
            y = int(rng.integers(rows[0], rows[1] + 1))
            x = int(rng.integers(columns[0], columns[1] + 1))
            if (y, x) in seen:
                continue
            seen.add((y, x))
            r, c = y - window_top, x - window_left
            pixels = (
                counts[r + size, c + size]
                - counts[r, c + size]
                - counts[r + size, c]
                + counts[r, c]
            )
            o2i = float(pixels) / size**2
            if low <= o2i < high or (high >= 1.0 and o2i == 1.0):
                crops.append(Crop(y, x, size, o2i))
        return crops


def _polygon_bounds(polygon: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the pixels a polygon can fill, bottom/right exclusive."""
    (x0, y0), (x1, y1) = polygon.min(axis=0), polygon.max(axis=0)
    return int(np.ceil(y0)), int(np.ceil(x0)), int(np.floor(y1)) + 1, int(np.floor(x1)) + 1


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _fill(polygon: np.ndarray, top: int, left: int, height: int, width: int):
    return draw.polygon(polygon[:, 1] - top, polygon[:, 0] - left, shape=(height, width))


def _clusters(bounds: list[tuple[int, int, int, int]], shape: tuple[int, int]):
    """Bounding boxes of groups of lesion polygons whose boxes touch (union-find), clipped."""
    parent = list(range(len(bounds)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    grown = [
        (top - 1, left - 1, bottom + 1, right + 1) for top, left, bottom, right in bounds
    ]  # touching pixels connect
    for i in range(len(bounds)):
        for j in range(i):
            if _overlap(grown[i], bounds[j]):
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(bounds)):
        groups.setdefault(root(i), []).append(i)
    height, width = shape
    for members in groups.values():
        top = max(0, min(bounds[i][0] for i in members))
        left = max(0, min(bounds[i][1] for i in members))
        bottom = min(height, max(bounds[i][2] for i in members))
        right = min(width, max(bounds[i][3] for i in members))
        if bottom > top and right > left:
            yield top, left, bottom, right
