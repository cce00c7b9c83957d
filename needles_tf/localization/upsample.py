"""Saliency grids -> input resolution, respecting where each grid cell looks.

Grid cell i of an extractor with output stride `stride` and receptive field
`receptive_field` sees input pixels [stride·i, stride·i + receptive_field); its
value is placed at that window's centre and interpolated bilinearly between
centres (held constant beyond the outermost ones). Written with keras.ops.
"""

from __future__ import annotations

from keras import ops


def _axis_weights(cells, pixels, receptive_field: int, stride: int):
    """Indices i0, i1 into the grid and the weight of i1 for every pixel along one axis."""
    centres = (ops.cast(ops.arange(pixels), "float32") + 0.5 - receptive_field / 2.0) / stride
    last = ops.cast(cells - 1, "float32")
    position = ops.clip(centres, 0.0, ops.maximum(last, 0.0))
    lower = ops.floor(position)
    upper = ops.minimum(lower + 1.0, ops.maximum(last, 0.0))
    return ops.cast(lower, "int32"), ops.cast(upper, "int32"), position - lower


def saliency_to_input(grid, height, width, receptive_field: int, stride: int):
    """(B, h, w, K) grid -> (B, height, width, K) map, bilinear between window centres."""
    grid = ops.cast(grid, "float32")
    shape = ops.shape(grid)
    top, bottom, wy = _axis_weights(shape[1], height, receptive_field, stride)
    left, right, wx = _axis_weights(shape[2], width, receptive_field, stride)
    wy = ops.reshape(wy, (1, -1, 1, 1))
    wx = ops.reshape(wx, (1, 1, -1, 1))
    rows = ops.take(grid, top, axis=1) * (1.0 - wy) + ops.take(grid, bottom, axis=1) * wy
    return ops.take(rows, left, axis=2) * (1.0 - wx) + ops.take(rows, right, axis=2) * wx
