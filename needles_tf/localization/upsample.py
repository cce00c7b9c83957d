"""Saliency grids -> input resolution, respecting where each grid cell looks.

Grid cell i of an extractor with output stride `stride` and receptive field
`receptive_field` sees input pixels [stride·i, stride·i + receptive_field); its
value is placed at that window's centre and interpolated bilinearly between
centres (held constant beyond the outermost ones). Written with keras.ops.
"""

from __future__ import annotations

import math

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


def blocks_to_input(cells, height, width, receptive_field: int, stride: int):
    """(B, h, w, side²) -> (B, height, width, 1), side = m·stride: each cell's values are
    the pixels of a side x side block, row-major, centred in its window; where blocks
    of neighbouring cells overlap (m > 1), the pixel is their mean. Pixels beyond the
    outermost blocks take the nearest value.

    m = 1 is sub-pixel convolution (depth to space, Shi et al., CVPR 2016); m > 1 an
    overlap-add with a fixed box kernel, the m² shifted sub-blocks summed.
    """
    cells = ops.cast(cells, "float32")
    shape = ops.shape(cells)
    side = math.isqrt(int(cells.shape[-1]))
    if side * side != cells.shape[-1] or side % stride:
        raise ValueError(
            f"{cells.shape[-1]} logits per cell: expected the square of a multiple of "
            f"the stride {stride}."
        )
    m = side // stride
    blocks = ops.reshape(cells, (shape[0], shape[1], shape[2], m, stride, m, stride))
    ones = ops.ones_like(blocks[:, :, :, 0, :1, 0, :1])
    total, count = 0.0, 0.0
    for a in range(m):
        for b in range(m):
            pads = [(0, 0), (a, m - 1 - a), (b, m - 1 - b), (0, 0), (0, 0)]
            total = total + ops.pad(blocks[:, :, :, a, :, b, :], pads)
            count = count + ops.pad(ones, pads)
    rows, columns = shape[1] + m - 1, shape[2] + m - 1
    fine = ops.reshape(
        ops.transpose(total / count, (0, 1, 3, 2, 4)), (shape[0], rows * stride, columns * stride)
    )
    offset = (receptive_field - side) // 2

    def indices(pixels, size):
        return ops.clip(ops.arange(pixels) - offset, 0, size - 1)

    fine = ops.take(fine, indices(height, rows * stride), axis=1)
    return ops.take(fine, indices(width, columns * stride), axis=2)[..., None]


def cells_to_input(cells, height, width, receptive_field: int, stride: int):
    """Per-cell values -> input resolution: one per cell bilinearly (`saliency_to_input`),
    a block of pixels per cell by `blocks_to_input`."""
    if cells.shape[-1] > 1 and stride > 1:
        return blocks_to_input(cells, height, width, receptive_field, stride)
    return saliency_to_input(cells, height, width, receptive_field, stride)
