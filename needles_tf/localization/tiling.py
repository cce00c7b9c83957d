"""Tiled inference: the extractor's grid of an image too large for one piece, stitched.

Grid cell i of an unpadded extractor with receptive field R and stride S sees
input pixels [S·i, S·i + R) and nothing else (needles_tf/localization/upsample.py).
Tiles that start on multiples of S and overlap by R - S therefore give, cell
for cell, the grid of the whole image. The head then pools the stitched grid,
so max, mean, the LSE family, LSE-LBA and attention pooling all get exactly
their whole-image value. Exact for extractors whose cells depend on their
window alone — BagNet with batch normalization (inference statistics), not
with instance normalization, whose statistics are those of the whole input.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import keras
import numpy as np


@dataclasses.dataclass(frozen=True)
class Span:
    """One tile along one axis: input pixels [start, stop) -> grid cells [first_cell, +cells)."""

    start: int
    stop: int
    first_cell: int
    cells: int


def grid_cells(length: int, receptive_field: int, stride: int) -> int:
    """Grid cells along an axis of `length` pixels: windows [S·i, S·i + R) that fit."""
    if length < receptive_field:
        return 0
    return (length - receptive_field) // stride + 1


def axis_spans(length: int, tile: int, receptive_field: int, stride: int) -> list[Span]:
    """Tiles of at most `tile` pixels covering every grid cell of an axis exactly once."""
    if tile < receptive_field:
        raise ValueError(
            f"tile_size={tile}: expected at least the receptive field, {receptive_field} pixels."
        )
    total = grid_cells(length, receptive_field, stride)
    per_tile = grid_cells(tile, receptive_field, stride)
    spans = []
    for first in range(0, total, per_tile):
        cells = min(per_tile, total - first)
        start = first * stride
        spans.append(Span(start, start + (cells - 1) * stride + receptive_field, first, cells))
    return spans


def tiled_grid(
    features: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    tile: int,
    receptive_field: int,
    stride: int,
    progress: bool = False,
) -> tuple[np.ndarray, int]:
    """(H, W, C) image -> ((1, h, w, D) grid, number of tiles) through `features`.

    `features` maps a (1, height, width, C) batch to its (1, cells_y, cells_x, D)
    grid. An image that fits in one tile is passed whole (trailing pixels
    included, as in whole-image inference).
    """
    height, width = image.shape[:2]
    if min(height, width) < receptive_field:
        raise ValueError(
            f"image of {height}x{width} pixels: expected at least the receptive field, "
            f"{receptive_field}x{receptive_field}."
        )
    if height <= tile and width <= tile:
        return np.asarray(features(image[None])), 1
    rows = axis_spans(height, tile, receptive_field, stride)
    columns = axis_spans(width, tile, receptive_field, stride)
    bar = keras.utils.Progbar(len(rows) * len(columns), unit_name="tile") if progress else None
    cells = (rows[-1].first_cell + rows[-1].cells, columns[-1].first_cell + columns[-1].cells)
    grid = None
    for row, column in itertools.product(rows, columns):
        part = np.asarray(features(image[None, row.start : row.stop, column.start : column.stop]))
        if part.shape[1:3] != (row.cells, column.cells):
            raise RuntimeError(
                f"a {row.stop - row.start}x{column.stop - column.start} tile gave a "
                f"{part.shape[1]}x{part.shape[2]} grid, not {row.cells}x{column.cells}: the "
                f"extractor does not have receptive field {receptive_field}, stride {stride}."
            )
        if grid is None:
            grid = np.empty((1, *cells, part.shape[-1]), part.dtype)
        grid[
            :,
            row.first_cell : row.first_cell + row.cells,
            column.first_cell : column.first_cell + column.cells,
        ] = part
        if bar is not None:
            bar.add(1)
    return grid, len(rows) * len(columns)
