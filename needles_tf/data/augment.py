"""Training-time augmentation of Yao et al. 2018 §4.2: random zoom, translation and rotation.

Each image of global batch k draws its zoom, shift and angle from a stateless
generator seeded by (seed, k), so the stream stays deterministic and a resumed
run (`stream.skip(k)`) sees the same augmented batches as an uninterrupted one.
The transform is one bilinear affine warp about the image centre, zero outside.
"""

from __future__ import annotations

import math

import tensorflow as tf
from keras import ops


def affine_matrices(zoom, angle, shift_x, shift_y, height, width):
    """(B, 8) projective transforms mapping output pixels to input pixels.

    Zoom z > 1 enlarges the content; `angle` is in radians, counter-clockwise;
    shifts move the content by that many pixels right / down.
    """
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    a0, a1, b0, b1 = cos, -sin, sin, cos  # y points down: this turns counter-clockwise
    a2 = cx - shift_x - a0 * cx - a1 * cy
    b2 = cy - shift_y - b0 * cx - b1 * cy
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def augment_batches(
    batches: tf.data.Dataset,
    seed: int,
    zoom: float = 0.25,
    translate_pixels: float = 50.0,
    rotate_degrees: float = 25.0,
) -> tf.data.Dataset:
    """Warps every (images, labels) batch: zoom in [1 - zoom, 1 + zoom], shifts in
    ±translate_pixels, rotations in ±rotate_degrees, each uniform per image."""

    def warp(step, batch):
        images, labels = batch
        shape = tf.shape(images)
        size = (shape[0],)
        seeds = tf.random.experimental.stateless_split(tf.stack([seed, step]), 4)
        uniform = [tf.random.stateless_uniform(size, s, -1.0, 1.0) for s in tf.unstack(seeds)]
        matrices = affine_matrices(
            1.0 + zoom * uniform[0],
            math.radians(rotate_degrees) * uniform[1],
            translate_pixels * uniform[2],
            translate_pixels * uniform[3],
            tf.cast(shape[1], tf.float32),
            tf.cast(shape[2], tf.float32),
        )
        warped = ops.image.affine_transform(
            tf.cast(images, tf.float32), matrices, interpolation="bilinear", fill_mode="constant"
        )
        return warped, labels

    return batches.enumerate().map(
        lambda step, batch: warp(tf.cast(step, tf.int32), batch),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
