"""Saliency grids placed at their receptive-field centres."""

from __future__ import annotations

import numpy as np

from needles_tf.localization.upsample import saliency_to_input


def test_grid_values_sit_at_window_centres_and_interpolate_between():
    # Two cells, receptive field 4, stride 2: windows [0, 4) and [2, 6), centres 2 and 4.
    grid = np.array([0.0, 1.0], np.float32).reshape(1, 2, 1, 1)
    grid = np.broadcast_to(grid, (1, 2, 3, 1))
    out = np.asarray(saliency_to_input(grid, 6, 3, receptive_field=4, stride=2))
    # Pixel centres 0.5 ... 5.5 -> grid positions (y + 0.5 - 2) / 2, clipped to [0, 1].
    expected = np.clip((np.arange(6) + 0.5 - 2.0) / 2.0, 0.0, 1.0)
    np.testing.assert_allclose(out[0, :, 0, 0], expected, atol=1e-6)
    np.testing.assert_allclose(out[0, :, 1, 0], expected, atol=1e-6)
    assert out.shape == (1, 6, 3, 1)


def test_bagnet_geometry_puts_a_peak_over_its_window():
    grid = np.zeros((1, 4, 4, 1), np.float32)
    grid[0, 2, 1, 0] = 1.0  # RF 33, stride 8: window rows 16..48, columns 8..40
    out = np.asarray(saliency_to_input(grid, 64, 64, receptive_field=33, stride=8))[0, ..., 0]
    row, column = np.unravel_index(np.argmax(out), out.shape)
    assert abs(row + 0.5 - (16 + 16.5)) <= 1.0 and abs(column + 0.5 - (8 + 16.5)) <= 1.0
    assert out.min() >= 0.0 and out.max() <= 1.0
