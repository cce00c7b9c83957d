"""BagNet-style topological-embedding extractor (Pawlowski et al. 2019 §2.2, App. B.2, Table 3).

ResNet-50 bottleneck layout, [3, 4, 6, 3] blocks with strides [2, 2, 2, 1] on
the first block of each stage; a stem of a 1x1 then an unpadded 3x3
convolution; instance normalization instead of batch normalization. The
receptive field (9, 33 or 177 pixels) is set by how many blocks of each stage
use a 3x3 convolution; the others use a 1x1 convolution widened x2.5 to keep
the capacity. Widths scale by s. All 3x3 convolutions are unpadded, so every
embedding position sees exactly one receptive-field window; shortcuts are
cropped to the centre of that window.
"""

from __future__ import annotations

import keras

from needles_tf.layers.cropping import CropBorder
from needles_tf.layers.normalization import NORMALIZATIONS
from needles_tf.layers.pointwise import StridedPointwiseConv2D
from needles_tf.models.backbone import Backbone, register_backbone

STAGE_PLANES = (64, 128, 256, 512)
STAGE_BLOCKS = (3, 4, 6, 3)
STAGE_STRIDES = (2, 2, 2, 1)
EXPANSION = 4
WIDEN_1X1 = 2.5
# Receptive field -> how many leading blocks of each stage use a 3x3 convolution.
THREE_BY_THREE_BLOCKS = {9: (1, 1, 0, 0), 33: (1, 1, 1, 1), 177: (3, 4, 6, 3)}


@register_backbone("bagnet")
class BagNetBackbone(Backbone):
    """(B, H, W, input_channels) float -> (B, h, w, 2048·width) embedding, h = (H - RF)/8 + 1.

    Receptive field `receptive_field` (9, 33 or 177) at stride 8; every cell is
    computed from its window alone under batch normalization (at inference), not
    under instance normalization, whose statistics are those of the whole input.
    """

    CONFIG_FIELDS = (
        "input_channels",
        "receptive_field",
        "width",
        "normalization",
        "zero_init_residual",
    )
    RECEPTIVE_FIELDS = tuple(sorted(THREE_BY_THREE_BLOCKS))  # those it can be built with

    def __init__(
        self,
        input_channels: int = 1,
        receptive_field: int = 33,
        width: float = 1.0,
        normalization: str = "instance",
        zero_init_residual: bool = False,
        dtype: str | None = None,
        name: str = "bagnet",
        **kwargs,
    ):
        arguments = dict(
            input_channels=input_channels,
            receptive_field=receptive_field,
            width=width,
            normalization=normalization,
            zero_init_residual=zero_init_residual,
            dtype=dtype,
        )
        super().__init__(
            *_bagnet_graph(**arguments),
            arguments=arguments,
            receptive_field=receptive_field,
            stride=8,
            local_cells=normalization == "batch",
            name=name,
            **kwargs,
        )


def _bagnet_graph(input_channels, receptive_field, width, normalization, zero_init_residual, dtype):
    """The functional graph (inputs, embedding) of a BagNet, after checking its settings."""
    if receptive_field not in THREE_BY_THREE_BLOCKS:
        raise ValueError(
            f"receptive_field={receptive_field}: expected one of {sorted(THREE_BY_THREE_BLOCKS)}."
        )
    if width <= 0:
        raise ValueError(f"width={width}: expected a positive capacity scale s.")
    NORMALIZATIONS.get_or_raise(normalization)
    layers = _Layers(dtype, normalization, zero_init_residual)
    inputs = keras.Input((None, None, input_channels), name="image")
    stem = int(64 * width)
    x = layers.conv(stem, 1, name="stem_conv1x1")(inputs)
    x = layers.conv(stem, 3, name="stem_conv3x3")(x)
    x = layers.relu(layers.norm(name="stem_norm")(x))
    for stage, (planes, blocks, stride, n3) in enumerate(
        zip(
            STAGE_PLANES,
            STAGE_BLOCKS,
            STAGE_STRIDES,
            THREE_BY_THREE_BLOCKS[receptive_field],
            strict=True,
        ),
        start=1,
    ):
        for block in range(blocks):
            x = _bottleneck(
                layers,
                x,
                planes=int(planes * width),
                middle=int(planes * width) if block < n3 else int(planes * WIDEN_1X1 * width),
                kernel=3 if block < n3 else 1,
                stride=stride if block == 0 else 1,
                name=f"stage{stage}_block{block + 1}",
            )
    return inputs, x


class _Layers:
    """Layer constructors sharing one dtype policy."""

    def __init__(self, dtype: str | None, normalization: str, zero_init_residual: bool):
        self.dtype = dtype
        self.normalization = normalization
        self.zero_init_residual = zero_init_residual

    def conv(self, filters: int, kernel: int, stride: int = 1, name: str | None = None):
        common = dict(use_bias=False, kernel_initializer="he_normal", dtype=self.dtype, name=name)
        if kernel == 1 and stride != 1:
            return StridedPointwiseConv2D(filters, stride, **common)
        return keras.layers.Conv2D(filters, kernel, strides=stride, padding="valid", **common)

    def norm(self, name: str | None = None, residual: bool = False):
        """Normalization; `residual` marks a block's last one, zero-initialized on request."""
        gamma = "zeros" if residual and self.zero_init_residual else "ones"
        return NORMALIZATIONS[self.normalization](
            dtype=self.dtype, name=name, gamma_initializer=gamma
        )

    def relu(self, x):
        return keras.layers.ReLU(dtype=self.dtype)(x)


def _bottleneck(layers: _Layers, x, *, planes, middle, kernel, stride, name):
    """1x1 -> kxk (stride) -> 1x1 (x4), residual added after cropping to the kxk window centre."""
    out = planes * EXPANSION
    y = layers.relu(layers.norm(f"{name}_norm1")(layers.conv(planes, 1, name=f"{name}_conv1")(x)))
    y = layers.conv(middle, kernel, stride, name=f"{name}_conv2")(y)
    y = layers.relu(layers.norm(f"{name}_norm2")(y))
    y = layers.norm(f"{name}_norm3", residual=True)(layers.conv(out, 1, name=f"{name}_conv3")(y))
    shortcut = x
    if kernel > 1:
        shortcut = CropBorder(kernel // 2, dtype=layers.dtype)(shortcut)
    if stride != 1 or x.shape[-1] != out:
        shortcut = layers.conv(out, 1, stride, name=f"{name}_shortcut")(shortcut)
        shortcut = layers.norm(f"{name}_shortcut_norm")(shortcut)
    return layers.relu(keras.layers.Add(dtype=layers.dtype)([y, shortcut]))
