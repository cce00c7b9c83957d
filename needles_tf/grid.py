"""Where a grid cell looks: the one definition of a cell's window, shared by every package.

Grid cell i (along one axis) of an unpadded extractor with receptive field R and
stride S sees input pixels [S·i, S·i + R); its position in the input is that
window's centre. Imports nothing, so data/, localization/, slides/ and predict
all use it without importing models/ or a backend.
"""

from __future__ import annotations


def cell_centre(index, receptive_field: int, stride: int):
    """The pixel coordinate of the centre of cell `index`'s window: S·i + R/2.

    `index` may be an int, a NumPy array or a tensor (of any backend); the result is
    of its kind, in floating point (for an integer array, float64).
    """
    return index * stride + receptive_field / 2.0
