"""TensorFlow kernel for instance normalization of large maps.

Under TensorFlow without XLA every elementwise op is a separate pass over
memory, and instance normalization of the large early maps of a BagNet
dominates a CPU training step. TensorFlow's fused batch-norm kernel (oneDNN)
normalizes one image per call in about two passes forward and two backward;
applied image by image it is exact instance normalization.
`needles_tf.layers.normalization` uses it under the TensorFlow backend only;
JAX fuses the portable `keras.ops` version by itself.
"""

from __future__ import annotations

import tensorflow as tf


def per_image_fused_instance_norm(x, gamma, beta, epsilon: float):
    """(B, H, W, C) float32 or bfloat16 with a static B -> same shape and dtype.

    Statistics are accumulated in float32 for bfloat16 inputs; `gamma` and
    `beta` are float32 (C,).
    """
    images = tf.split(x, x.shape[0], axis=0)
    normalized = [
        tf.compat.v1.nn.fused_batch_norm(
            image, gamma, beta, epsilon=epsilon, data_format="NHWC", is_training=True
        )[0]
        for image in images
    ]
    return tf.concat(normalized, axis=0)
