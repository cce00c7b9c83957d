"""Border cropping for the shortcuts of unpadded residual blocks."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="needles_tf")
class CropBorder(keras.layers.Layer):
    """Removes `margin` pixels from each side of a (B, H, W, C) map.

    Same result as `keras.layers.Cropping2D(margin)`, but through `ops.slice`,
    whose gradient under TensorFlow is a zero-padding: Cropping2D's strided
    slice differentiates through StridedSliceGrad, which took 10% of a BagNet
    training step on CPU (benchmarks/train_throughput.py).
    """

    def __init__(self, margin: int, **kwargs):
        super().__init__(**kwargs)
        if margin < 0:
            raise ValueError(f"margin={margin}: expected a non-negative number of pixels.")
        self.margin = int(margin)

    def call(self, inputs):
        m = self.margin
        batch, height, width, channels = ops.shape(inputs)
        return ops.slice(inputs, (0, m, m, 0), (batch, height - 2 * m, width - 2 * m, channels))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        trim = 2 * self.margin
        return (
            batch,
            None if height is None else height - trim,
            None if width is None else width - trim,
            channels,
        )

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}
