"""Instance normalization: per image and channel, over H and W."""

import numpy as np
import pytest

from needles_tf.layers.normalization import InstanceNormalization


def test_normalizes_each_image_and_channel():
    x = np.random.default_rng(0).normal(3.0, 5.0, (2, 7, 5, 3)).astype(np.float32)
    layer = InstanceNormalization()
    layer.build(x.shape)
    layer.set_weights(
        [np.array([1.0, 2.0, 0.5], np.float32), np.array([0.0, 1.0, -1.0], np.float32)]
    )
    y = np.asarray(layer(x))
    mean, std = x.mean(axis=(1, 2), keepdims=True), x.std(axis=(1, 2), keepdims=True)
    expected = (x - mean) / np.sqrt(std**2 + 1e-5) * [1.0, 2.0, 0.5] + [0.0, 1.0, -1.0]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_bfloat16_inputs_keep_float32_statistics():
    x = np.random.default_rng(1).normal(100.0, 1.0, (1, 16, 16, 2)).astype(np.float32)
    layer = InstanceNormalization(dtype="mixed_bfloat16")
    y = np.asarray(layer(x)).astype(np.float32)
    assert np.abs(y.mean(axis=(1, 2))).max() < 0.05
    assert y.std(axis=(1, 2)) == pytest.approx(np.ones((1, 2)), abs=0.05)
