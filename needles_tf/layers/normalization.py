"""Instance normalization (Ulyanov et al. 2016), used by paper 000 §2.2 instead of BatchNorm."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="needles_tf")
class InstanceNormalization(keras.layers.Layer):
    """Normalizes each channel of each image over H and W, then scales and shifts.

    Statistics are computed in float32 even under a bf16 policy. Built on
    `ops.batch_normalization` (one fused scale-and-shift): about 15% faster
    training than normalizing by hand (benchmarks/train_throughput.py).
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        mean, variance = ops.moments(x, axes=(1, 2), keepdims=True)
        y = ops.batch_normalization(
            x,
            mean,
            variance,
            axis=-1,
            offset=ops.cast(self.beta, "float32"),
            scale=ops.cast(self.gamma, "float32"),
            epsilon=self.epsilon,
        )
        return ops.cast(y, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
