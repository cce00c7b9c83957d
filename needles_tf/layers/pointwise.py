"""Strided 1x1 convolutions computed as a subsampling followed by a stride-1 1x1 convolution."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="needles_tf")
class StridedPointwiseConv2D(keras.layers.Conv2D):
    """`Conv2D(filters, 1, strides=s)`, computed as a stride-1 1x1 convolution of `x[:, ::s, ::s]`.

    The two are the same function with the same weights and gradients (a 1x1 kernel
    at stride s reads exactly the pixels x[s·i, s·j], with "valid" or "same" padding
    alike). The subsampled form exists because oneDNN's kernel for the weight gradient
    of a strided 1x1 convolution with fewer input channels than its vector block
    (16 on AVX-512, 8 on AVX2) writes past its workspace: the process crashes, or the
    gradients come out wrong (oneDNN's bug report, github.com/uxlfoundation/oneDNN/issues/6035;
    with TensorFlow 2.21, crashes on an Intel Sapphire Rapids, and on an AMD Zen 4 crashes
    or a relative error of about 1 at 4-15 input channels, measured).
    Every strided 1x1 convolution of the extractors uses this layer.
    """

    def __init__(self, filters: int, strides: int | tuple[int, int] = 1, **kwargs):
        kernel_size = kwargs.pop("kernel_size", 1)
        if _pair(kernel_size) != (1, 1):
            raise ValueError(f"kernel_size={kernel_size}: StridedPointwiseConv2D is 1x1 only.")
        if kwargs.get("data_format") not in (None, "channels_last"):
            raise ValueError("StridedPointwiseConv2D: expected data_format='channels_last'.")
        dilation_rate = kwargs.pop("dilation_rate", 1)
        if _pair(dilation_rate) != (1, 1):
            raise ValueError(f"dilation_rate={dilation_rate}: a 1x1 kernel has no dilation.")
        kwargs["data_format"] = "channels_last"
        super().__init__(filters, 1, strides=strides, **kwargs)

    def convolution_op(self, inputs, kernel):
        rows, columns = self.strides
        if (rows, columns) != (1, 1):
            inputs = subsample(inputs, rows, columns)
        return keras.ops.conv(inputs, kernel, strides=1, padding="valid")


def subsample(x, rows: int, columns: int):
    """`x[:, ::rows, ::columns, :]` as a reshape and a contiguous slice.

    The same values, but TensorFlow differentiates a contiguous slice with a pad,
    while a strided slice's StridedSliceGrad made a BagNet shortcut 1.8x slower
    (fwd + bwd at 32x60x60x64 -> 256 channels: 43.6 ms strided, 24.7 ms this way,
    24.1 ms oneDNN's strided convolution). Sizes that are not multiples of the
    stride are zero-padded first; the padding is never selected.
    """
    ops = keras.ops
    batch, height, width, channels = ops.shape(x)
    x = ops.pad(x, ((0, 0), (0, -height % rows), (0, -width % columns), (0, 0)))
    out_height, out_width = (height + rows - 1) // rows, (width + columns - 1) // columns
    x = ops.reshape(x, (batch, out_height, rows, out_width, columns * channels))
    x = ops.slice(x, (0, 0, 0, 0, 0), (batch, out_height, 1, out_width, channels))
    return ops.reshape(x, (batch, out_height, out_width, channels))


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)
