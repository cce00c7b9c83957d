"""Instance normalization (Ulyanov et al. 2016), used instead of BatchNorm by Pawlowski et al."""

from __future__ import annotations

import keras
from keras import ops

from needles_tf.registry import Registry


def instance_normalize(x, gamma, beta, epsilon: float):
    """Normalizes float32 `x` (B, H, W, C) per image and channel over H, W; then gamma, beta.

    Forward and backward are written out by hand (`ops.custom_gradient`) so
    that each touches every activation in as few whole-tensor passes as
    possible: automatic differentiation of mean, variance and the affine map
    produces about twice as many, and on CPU this layer is memory-bound.
    The variance is `ops.var`, the mean of squared deviations from the mean
    (TensorFlow fuses it into one SquaredDifference pass): the one-pass
    E[x²] - E[x]² lost all precision when |m| is large against the deviation
    (18% error at m / deviation = 1000, measured), and centring x explicitly
    cost a whole extra pass (up to 25% slower per layer).
    Per image and channel, with mean m, inverse deviation r = 1/sqrt(var + eps),
    a = gamma * r, n = H * W, sums over H and W, and dy the upstream gradient:

        y      = a * x + (beta - a * m)
        g      = sum(dy * xhat) = (sum(dy * x) - m * sum(dy)) * r
        dx     = a * dy + k * x + c,  k = -a * r * g / n,  c = -a * sum(dy) / n - k * m
        dgamma = g,  dbeta = sum(dy)   (each also summed over the batch)

    so the backward pass needs the input x, never the normalized xhat.
    """

    @ops.custom_gradient
    def normalize(x, gamma, beta):
        mean = ops.mean(x, axis=(1, 2), keepdims=True)
        variance = ops.var(x, axis=(1, 2), keepdims=True)
        inv_std = ops.rsqrt(variance + epsilon)
        scale = inv_std * gamma
        y = x * scale + (beta - mean * scale)

        def grad(*args, upstream=None):
            dy = args[0] if upstream is None else upstream
            sum_dy = ops.sum(dy, axis=(1, 2), keepdims=True)
            sum_dy_x = ops.sum(dy * x, axis=(1, 2), keepdims=True)
            sum_dy_xhat = (sum_dy_x - mean * sum_dy) * inv_std
            count = ops.cast(ops.shape(x)[1] * ops.shape(x)[2], x.dtype)
            k = -scale * inv_std * sum_dy_xhat / count
            c = -scale * sum_dy / count - k * mean
            dx = dy * scale + (x * k + c)
            dgamma = ops.sum(sum_dy_xhat, axis=(0, 1, 2))
            dbeta = ops.sum(sum_dy, axis=(0, 1, 2))
            return dx, dgamma, dbeta

        return y, grad

    return normalize(x, gamma, beta)


# Maps of at least this many values per image (H·W·C) use TensorFlow's fused
# kernel (see `needles_tf.kernels.tf_instance_norm`); on smaller ones the
# per-image kernel calls cost more than they save (benchmarks/train_throughput.py).
FUSED_KERNEL_MIN_VALUES = 2**16


def _fused_kernel_applies(x) -> bool:
    """TensorFlow backend, static shape (a fixed batch size) and a large map."""
    _, height, width, channels = x.shape
    return (
        keras.backend.backend() == "tensorflow"
        and None not in x.shape
        and height * width * channels >= FUSED_KERNEL_MIN_VALUES
    )


@keras.saving.register_keras_serializable(package="needles_tf")
class InstanceNormalization(keras.layers.Layer):
    """Normalizes each channel of each image over H and W, then scales and shifts.

    Statistics are computed in float32 even under a bf16 policy. Under the
    TensorFlow backend, large maps with a static batch size (training batches
    with `drop_remainder=True`) go through TensorFlow's fused batch-norm kernel
    one image at a time; everything else through the portable
    `instance_normalize`. Both compute the same function.
    """

    def __init__(self, epsilon: float = 1e-5, gamma_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(
            name="gamma", shape=(channels,), initializer=self.gamma_initializer
        )
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, inputs):
        gamma, beta = ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32")
        if _fused_kernel_applies(inputs):
            from needles_tf.kernels.tf_instance_norm import per_image_fused_instance_norm

            return per_image_fused_instance_norm(inputs, gamma, beta, self.epsilon)
        y = instance_normalize(ops.cast(inputs, "float32"), gamma, beta, self.epsilon)
        return ops.cast(y, self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "epsilon": self.epsilon,
            "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
        }


# Name -> normalization layer constructor of the extractors: instance (Pawlowski et al. 2019
# §2.2, statistics of each input) or batch (BagNet's and Yao et al.'s own; per-position at
# inference).
NORMALIZATIONS: Registry = Registry("--config.model.normalization")
NORMALIZATIONS.register("instance")(InstanceNormalization)


@NORMALIZATIONS.register("batch")
def batch_normalization(**kwargs) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(epsilon=1e-5, **kwargs)
