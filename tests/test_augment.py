"""Yao et al.'s augmentation: exact warps for known parameters; deterministic, resumable stream."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from keras import ops

from needles_tf.data.augment import affine_matrices, augment_batches


def warp(images, zoom=1.0, angle=0.0, shift_x=0.0, shift_y=0.0):
    batch, height, width = images.shape[:3]
    matrices = affine_matrices(
        tf.fill([batch], zoom),
        tf.fill([batch], angle),
        tf.fill([batch], shift_x),
        tf.fill([batch], shift_y),
        float(height),
        float(width),
    )
    return np.asarray(ops.image.affine_transform(images, matrices, fill_mode="constant"))


def test_known_warps():
    image = np.zeros((1, 9, 9, 1), np.float32)
    image[0, 4, 4, 0] = 1.0
    np.testing.assert_allclose(warp(image), image, atol=1e-6)
    shifted = warp(image, shift_x=3.0, shift_y=-2.0)
    assert np.unravel_index(np.argmax(shifted[0, ..., 0]), (9, 9)) == (2, 7)
    bar = np.zeros((1, 9, 9, 1), np.float32)
    bar[0, 4, 5:, 0] = 1.0  # right of the centre
    rotated = warp(bar, angle=math.pi / 2)  # a quarter turn counter-clockwise: above it
    np.testing.assert_allclose(rotated[0, :4, 4, 0], 1.0, atol=1e-5)
    zoomed = warp(bar, zoom=2.0)
    assert zoomed[0, 4, 6, 0] > 0.99 and zoomed[0, 4, 4, 0] < 0.01  # x = 6 samples x = 5


def stream():
    images = np.random.default_rng(0).uniform(0, 255, (12, 16, 16, 1)).astype(np.float32)
    labels = np.zeros((12, 1), np.float32)
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(4)
    return augment_batches(batches, seed=3)


def test_stream_is_deterministic_and_resumable():
    first = [x.numpy() for x, _ in stream().take(5)]
    again = [x.numpy() for x, _ in stream().take(5)]
    resumed = [x.numpy() for x, _ in stream().skip(3).take(2)]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(resumed[0], first[3])
    np.testing.assert_array_equal(resumed[1], first[4])
    assert not np.allclose(first[0], first[3])  # batch 3 repeats batch 0's images, warped anew
