"""Tiles of an image too large for one piece, whose grids are pieces of the whole image's.

Grid cell i of an unpadded extractor with receptive field R and stride S sees
input pixels [S·i, S·i + R) and nothing else (needles_tf/localization/upsample.py).
Tiles that start on multiples of S and overlap by R - S therefore give, cell
for cell, the grid of the whole image (needles_tf/localization/streaming.py pools
them). Exact for extractors whose cells depend on their window alone — BagNet with
batch normalization (inference statistics), not with instance normalization, whose
statistics are those of the whole input.
"""

from __future__ import annotations

import dataclasses
import itertools

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


def check_tile_grid(grid, row: Span, column: Span, receptive_field: int, stride: int) -> None:
    """Raises when a tile's grid is not the cells its spans promise (a wrong geometry)."""
    if tuple(grid.shape[1:3]) != (row.cells, column.cells):
        raise RuntimeError(
            f"a {row.stop - row.start}x{column.stop - column.start} tile gave a "
            f"{grid.shape[1]}x{grid.shape[2]} grid, not {row.cells}x{column.cells}: the "
            f"extractor does not have receptive field {receptive_field}, stride {stride}."
        )


@dataclasses.dataclass(frozen=True)
class Tile:
    """One tile: its rows and columns of pixels, and the grid cells they give."""

    rows: Span
    columns: Span

    @property
    def shape(self) -> tuple[int, int]:
        """Its height and width in pixels."""
        return self.rows.stop - self.rows.start, self.columns.stop - self.columns.start

    def pixels(self, image: np.ndarray) -> np.ndarray:
        return image[self.rows.start : self.rows.stop, self.columns.start : self.columns.stop]

    @property
    def cells(self) -> tuple[slice, slice]:
        """The tile's place in the whole grid."""
        rows, columns = self.rows, self.columns
        return (
            slice(rows.first_cell, rows.first_cell + rows.cells),
            slice(columns.first_cell, columns.first_cell + columns.cells),
        )


def tiles(
    height: int, width: int, tile: int, receptive_field: int, stride: int
) -> tuple[list[Tile], tuple[int, int]]:
    """The tiles of a height x width image, row by row, and the whole grid's shape."""
    if min(height, width) < receptive_field:
        raise ValueError(
            f"image of {height}x{width} pixels: expected at least the receptive field, "
            f"{receptive_field}x{receptive_field}."
        )
    if height <= tile and width <= tile:  # whole, trailing pixels included, as in training
        rows = [Span(0, height, 0, grid_cells(height, receptive_field, stride))]
        columns = [Span(0, width, 0, grid_cells(width, receptive_field, stride))]
    else:
        rows = axis_spans(height, tile, receptive_field, stride)
        columns = axis_spans(width, tile, receptive_field, stride)
    grid = (rows[-1].first_cell + rows[-1].cells, columns[-1].first_cell + columns[-1].cells)
    return [Tile(r, c) for r, c in itertools.product(rows, columns)], grid
