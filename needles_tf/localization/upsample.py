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


def subpixel_to_input(cells, height, width, receptive_field: int, stride: int):
    """(B, h, w, stride²) -> (B, height, width, 1): each cell's values are the pixels of
    the stride x stride block at the centre of its window (depth to space), row-major;
    pixels beyond the outermost blocks take the nearest block's value."""
    cells = ops.cast(cells, "float32")
    shape = ops.shape(cells)
    blocks = ops.reshape(cells, (shape[0], shape[1], shape[2], stride, stride))
    fine = ops.reshape(
        ops.transpose(blocks, (0, 1, 3, 2, 4)), (shape[0], shape[1] * stride, shape[2] * stride)
    )
    offset = (receptive_field - stride) // 2

    def indices(pixels, size):
        return ops.clip(ops.arange(pixels) - offset, 0, size - 1)

    fine = ops.take(fine, indices(height, shape[1] * stride), axis=1)
    return ops.take(fine, indices(width, shape[2] * stride), axis=2)[..., None]


def cells_to_input(cells, height, width, receptive_field: int, stride: int):
    """Per-cell values -> input resolution: one per cell bilinearly (`saliency_to_input`),
    stride² per cell as sub-pixels (`subpixel_to_input`)."""
    if cells.shape[-1] == stride * stride and stride > 1:
        return subpixel_to_input(cells, height, width, receptive_field, stride)
    return saliency_to_input(cells, height, width, receptive_field, stride)
