"""CropBorder: Cropping2D's result through a cheaper-to-differentiate slice."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from needles_tf.layers.cropping import CropBorder


@pytest.mark.parametrize("margin", [0, 1, 3])
def test_same_values_and_gradients_as_cropping2d(margin):
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 11, 9, 3)), tf.float32)
    results = []
    for layer in (CropBorder(margin), keras.layers.Cropping2D(margin)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            weights = tf.reshape(tf.range(tf.size(y), dtype=tf.float32), tf.shape(y))
            loss = tf.reduce_sum(y * tf.sqrt(weights))
        results.append((y.numpy(), tape.gradient(loss, x).numpy()))
    (y, dx), (expected_y, expected_dx) = results
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-6)


def test_symbolic_shape_and_config():
    layer = CropBorder(2)
    assert layer.compute_output_shape((None, 10, None, 4)) == (None, 6, None, 4)
    assert CropBorder.from_config(layer.get_config()).margin == 2
    with pytest.raises(ValueError, match="margin=-1"):
        CropBorder(-1)
