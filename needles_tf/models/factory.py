"""build_model(config): image -> extractor -> MIL head -> named outputs.

`config` is an ml_collections ConfigDict (see configs/) with the fields
  extractor: a name in needles_tf.models.backbone.BACKBONES: "bagnet" (Pawlowski et
    al. 2019), or "multires" (Yao et al. 2018, needles_tf/models/multires.py, with
    levels, saliency_stride, growth_rate and dense_layers; width scales its channels),
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

import keras
from keras import ops

from needles_tf.models.backbone import Backbone, get_backbone_class
from needles_tf.models.heads import HEADS
from needles_tf.precision import resolve_dtype_policy


def backbone_of(model: keras.Model) -> Backbone:
    """The backbone inside a model built by `build_model`."""
    backbones = [layer for layer in model.layers if isinstance(layer, Backbone)]
    if len(backbones) != 1:
        raise ValueError(f"{model.name}: expected one Backbone layer, found {len(backbones)}.")
    return backbones[0]


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
    if config.head not in HEADS:
        raise ValueError(f"head={config.head!r}: expected one of {sorted(HEADS)}.")
    if config.num_classes < 1:
        raise ValueError(f"num_classes={config.num_classes}: expected at least 1.")
    backbone_class = get_backbone_class(config.extractor)  # an unknown name fails first
    dtype = resolve_dtype_policy(config.get("dtype_policy", None))
    images = keras.Input((None, None, None), name="image")
    x = ImagePreprocessing(config.input_channels, dtype=dtype, name="preprocessing")(images)
    backbone = backbone_class.from_model_config(config, dtype)
    embedding = backbone(x)
    outputs = HEADS[config.head](
        embedding,
        num_classes=config.num_classes,
        pooling=config.pooling,
        pooling_kwargs=dict(config.get("pooling_kwargs", None) or {}),
    )
    name = f"{config.extractor}_{config.head}_{config.pooling}"
    return keras.Model(images, outputs, name=name)
