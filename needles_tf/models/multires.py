"""Multi-resolution ResNet/DenseNet extractor with coarse-to-fine fusion (Yao et al. 2018 §3.1-3.3).

    image -> stem (3x3, stride 2)
          -> residual down-sampling blocks, F^{l+1} = relu(g(F^l) + f(F^l))   §3.1
             (g: 3x3 stride 2 -> 3x3; f: 1x1 stride 2), channels x2 per halving
          -> at each of the `levels` coarsest resolutions, from the saliency
             stride down, a dense block F_{m+1} = relu(f(F_1 ⊕ ... ⊕ F_m))   §3.2, eq. 2
          -> coarse to fine, F^l = f(U(F^{l+1}) ⊕ F^l_dense), U nearest-neighbour
             upsampling, ⊕ channel concatenation                              §3.3, eq. 3
          -> (B, H/stride, W/stride, C) at the saliency stride (e.g. 64x64 for 512x512
             with stride 8), for the instance head and LSE-LBA pooling (§3.5-3.6).

All convolutions are "same"-padded, so any input size works (a map upsampled from
an odd size is cropped to its finer neighbour). Written with Keras layers and
keras.ops only.
"""

from __future__ import annotations

import keras
from keras import ops

from needles_tf.layers.normalization import NORMALIZATIONS
from needles_tf.layers.pointwise import StridedPointwiseConv2D
from needles_tf.models.backbone import Backbone, register_backbone


@keras.saving.register_keras_serializable(package="needles_tf")
class UpsampleLike(keras.layers.Layer):
    """Nearest-neighbour x2 upsampling of `x`, cropped to the height and width of `reference`."""

    def call(self, x, reference):
        x = ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)
        shape = ops.shape(reference)
        channels = ops.shape(x)[3]
        return ops.slice(x, (0, 0, 0, 0), (shape[0], shape[1], shape[2], channels))

    def compute_output_shape(self, x_shape, reference_shape):
        return (*reference_shape[:3], x_shape[3])


@register_backbone("multires")
class MultiResBackbone(Backbone):
    """(B, H, W, input_channels) -> (B, ceil(H / saliency_stride), ..., C) fused features.

    `levels`: resolutions with a dense block, from the saliency stride down (stride
    saliency_stride · 2^(levels - 1) at the coarsest); `width` scales every channel
    count (32 at stride 2, doubling per halving); `growth_rate`, `dense_layers`: each
    dense block adds dense_layers maps of growth_rate channels. With "same" padding,
    cell i is centred on [s·i, s·i + s) (its geometry for display: window s, stride s)
    while its context reaches far wider: no cell is local.
    """

    CONFIG_FIELDS = (
        "input_channels",
        "levels",
        "saliency_stride",
        "width",
        "growth_rate",
        "dense_layers",
        "normalization",
    )

    def __init__(
        self,
        input_channels: int = 1,
        levels: int = 3,
        saliency_stride: int = 8,
        width: float = 1.0,
        growth_rate: int = 16,
        dense_layers: int = 2,
        normalization: str = "batch",
        dtype: str | None = None,
        name: str = "multires",
        **kwargs,
    ):
        arguments = dict(
            input_channels=input_channels,
            levels=levels,
            saliency_stride=saliency_stride,
            width=width,
            growth_rate=growth_rate,
            dense_layers=dense_layers,
            normalization=normalization,
            dtype=dtype,
        )
        super().__init__(
            *_multires_graph(**arguments),
            arguments=arguments,
            receptive_field=saliency_stride,
            stride=saliency_stride,
            local_cells=False,
            name=name,
            **kwargs,
        )


def _multires_graph(
    input_channels, levels, saliency_stride, width, growth_rate, dense_layers, normalization, dtype
):
    """The functional graph (inputs, fused features), after checking the settings."""
    if saliency_stride < 2 or saliency_stride & (saliency_stride - 1):
        raise ValueError(f"saliency_stride={saliency_stride}: expected a power of 2, >= 2.")
    if levels < 1:
        raise ValueError(f"levels={levels}: expected at least 1.")
    if width <= 0 or growth_rate < 1 or dense_layers < 1:
        raise ValueError(
            f"width={width}, growth_rate={growth_rate}, dense_layers={dense_layers}: expected "
            "a positive width and at least one dense layer of at least one channel."
        )
    NORMALIZATIONS.get_or_raise(normalization)
    make = _Layers(dtype, normalization)
    inputs = keras.Input((None, None, input_channels), name="image")
    stride, channels = 2, max(8, int(32 * width))
    x = make.conv_norm_relu(inputs, channels, 3, 2, "stem")
    resolutions = []  # ResNet outputs at the fused strides, finest first
    while True:
        if stride >= saliency_stride:
            resolutions.append(x)
        if len(resolutions) == levels:
            break
        channels, stride = channels * 2, stride * 2
        x = _residual_down(make, x, channels, f"down{stride}")
    dense = [
        _dense_block(make, features, growth_rate, dense_layers, f"dense{saliency_stride << i}")
        for i, features in enumerate(resolutions)
    ]
    fused = dense[-1]
    for i in range(levels - 2, -1, -1):  # coarse to fine (eq. 3)
        level_stride = saliency_stride << i
        upsampled = UpsampleLike(dtype=dtype, name=f"up{level_stride}")(fused, dense[i])
        joined = keras.layers.Concatenate(dtype=dtype, name=f"fuse{level_stride}_concat")(
            [upsampled, dense[i]]
        )
        fused = make.conv_norm_relu(
            joined, int(resolutions[i].shape[-1]), 3, 1, f"fuse{level_stride}"
        )
    return inputs, fused


class _Layers:
    """Layer constructors sharing one dtype policy and normalization."""

    def __init__(self, dtype: str | None, normalization: str):
        self.dtype = dtype
        self.normalization = normalization

    def conv(self, x, filters: int, kernel: int, stride: int, name: str):
        common = dict(use_bias=False, kernel_initializer="he_normal", dtype=self.dtype, name=name)
        if kernel == 1 and stride != 1:
            return StridedPointwiseConv2D(filters, stride, **common)(x)
        return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", **common)(x)

    def norm(self, x, name: str):
        return NORMALIZATIONS[self.normalization](dtype=self.dtype, name=name)(x)

    def relu(self, x):
        return keras.layers.ReLU(dtype=self.dtype)(x)

    def conv_norm_relu(self, x, filters: int, kernel: int, stride: int, name: str):
        return self.relu(
            self.norm(self.conv(x, filters, kernel, stride, f"{name}_conv"), f"{name}_norm")
        )


def _residual_down(make: _Layers, x, channels: int, name: str):
    """F^{l+1} = relu(g(F^l) + f(F^l)): half the resolution, `channels` channels (§3.1)."""
    g = make.conv_norm_relu(x, channels, 3, 2, f"{name}_g1")
    g = make.norm(make.conv(g, channels, 3, 1, f"{name}_g2_conv"), f"{name}_g2_norm")
    f = make.norm(make.conv(x, channels, 1, 2, f"{name}_f_conv"), f"{name}_f_norm")
    return make.relu(keras.layers.Add(dtype=make.dtype, name=f"{name}_add")([g, f]))


def _dense_block(make: _Layers, x, growth_rate: int, layers: int, name: str):
    """F_{m+1} = relu(norm(conv3x3(F_1 ⊕ ... ⊕ F_m))); returns F_1 ⊕ ... ⊕ F_{layers+1} (eq. 2)."""
    maps = [x]
    for m in range(layers):
        joined = (
            maps[0]
            if len(maps) == 1
            else keras.layers.Concatenate(dtype=make.dtype, name=f"{name}_concat{m}")(maps)
        )
        maps.append(make.conv_norm_relu(joined, growth_rate, 3, 1, f"{name}_layer{m}"))
    return keras.layers.Concatenate(dtype=make.dtype, name=f"{name}_out")(maps)
