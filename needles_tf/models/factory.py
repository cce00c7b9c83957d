"""build_model(config): image -> extractor -> MIL head -> named outputs.

`config` is an ml_collections ConfigDict (see configs/) with the fields
  extractor: name in EXTRACTORS: "bagnet" (Pawlowski et al. 2019), or "multires" (Yao et al. 2018,
    needles_tf/models/multires.py, with levels, saliency_stride, growth_rate and
    dense_layers; width scales its channels),
  receptive_field, width: the BagNet receptive field (9, 33, 177) and capacity s,
  normalization, zero_init_residual: "instance" (Pawlowski et al. 2019) or "batch", and
    whether each residual block's last normalization starts at gamma = 0,
  input_channels: 1 or 3, the channels the extractor sees,
  head: "embedding" or "instance" (needles_tf.models.heads),
  pooling, pooling_kwargs: a name in needles_tf.layers.pooling.POOLINGS and its
    arguments (e.g. {"r0": 5.0} for "lse_lba"),
  num_classes: K sigmoid outputs (1 for a binary task),
  dtype_policy: Keras dtype policy of the extractor, e.g. "float32" or
    "mixed_bfloat16" (heads and pooling always compute in float32); "auto"
    takes bf16 only where it is measured faster (needles_tf/precision.py).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import ops

from needles_tf.models.bagnet import build_bagnet
from needles_tf.models.heads import HEADS
from needles_tf.models.multires import build_multires
from needles_tf.precision import resolve_dtype_policy

EXTRACTORS: dict[str, Callable[..., keras.Model]] = {
    "bagnet": lambda config, dtype: build_bagnet(
        config.input_channels,
        config.receptive_field,
        config.width,
        dtype=dtype,
        normalization=config.get("normalization", "instance"),
        zero_init_residual=config.get("zero_init_residual", False),
    ),
    "multires": lambda config, dtype: build_multires(
        config.input_channels,
        levels=config.get("levels", 3),
        saliency_stride=config.get("saliency_stride", 8),
        width=config.get("width", 1.0),
        growth_rate=config.get("growth_rate", 16),
        dense_layers=config.get("dense_layers", 2),
        normalization=config.get("normalization", "batch"),
        dtype=dtype,
    ),
}

# Extractor -> (receptive field, output stride) of one saliency grid cell, for upsampling.
GEOMETRY: dict[str, Callable[..., tuple[int, int]]] = {
    "bagnet": lambda config: (int(config.receptive_field), 8),
    # "same" padding: cell i is centred on [s·i, s·i + s); its context is far wider.
    "multires": lambda config: (int(config.get("saliency_stride", 8)),) * 2,
}


# Extractor -> whether each grid cell depends on its receptive-field window alone, so that
# tiled inference equals whole-image inference (instance normalization sees the whole input).
LOCAL_CELLS: dict[str, Callable[..., bool]] = {
    "bagnet": lambda config: config.get("normalization", "instance") == "batch",
    "multires": lambda config: False,  # coarse levels see far beyond any tile
}


def has_local_cells(config) -> bool:
    """Whether `config`'s extractor computes each grid cell from its window alone."""
    return LOCAL_CELLS[config.extractor](config)


def saliency_geometry(config) -> tuple[int, int]:
    """(receptive field, stride) in input pixels of the saliency grid of `config`'s model."""
    return GEOMETRY[config.extractor](config)


@keras.saving.register_keras_serializable(package="needles_tf")
class ImagePreprocessing(keras.layers.Layer):
    """Pixel values in [0, 255] (uint8 or float, 1 or 3 channels) -> [0, 1] with `channels`.

    One channel from three by averaging; three from one by repetition.
    """

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        if channels not in (1, 3):
            raise ValueError(f"input_channels={channels}: expected 1 or 3.")
        self.channels = int(channels)

    def call(self, images):
        x = ops.cast(images, self.compute_dtype) / 255.0
        if self.channels == 1:
            return ops.mean(x, axis=-1, keepdims=True)
        shape = ops.shape(x)
        return ops.broadcast_to(x, (shape[0], shape[1], shape[2], 3))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


def build_model(config) -> keras.Model:
    """The classifier of `config`, returning a dict of named outputs."""
    if config.extractor not in EXTRACTORS:
        raise ValueError(f"extractor={config.extractor!r}: expected one of {sorted(EXTRACTORS)}.")
    if config.head not in HEADS:
        raise ValueError(f"head={config.head!r}: expected one of {sorted(HEADS)}.")
    if config.num_classes < 1:
        raise ValueError(f"num_classes={config.num_classes}: expected at least 1.")
    dtype = resolve_dtype_policy(config.get("dtype_policy", None))
    images = keras.Input((None, None, None), name="image")
    x = ImagePreprocessing(config.input_channels, dtype=dtype, name="preprocessing")(images)
    embedding = EXTRACTORS[config.extractor](config, dtype)(x)
    outputs = HEADS[config.head](
        embedding,
        num_classes=config.num_classes,
        pooling=config.pooling,
        pooling_kwargs=dict(config.get("pooling_kwargs", None) or {}),
    )
    name = f"{config.extractor}_{config.head}_{config.pooling}"
    return keras.Model(images, outputs, name=name)
