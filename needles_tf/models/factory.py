"""build_model(config): a NeedleClassifier (preprocessing -> backbone -> MIL head) from a config.

`config` is an ml_collections ConfigDict (see needles_tf/configs/) with the fields
  extractor: a name in needles_tf.models.backbone.BACKBONES: "bagnet" (Pawlowski et
    al. 2019), or "multires" (Yao et al. 2018, needles_tf/models/multires.py, with
    levels, saliency_stride, growth_rate and dense_layers; width scales its channels),
  receptive_field, width: the BagNet receptive field (9, 33, 177) and capacity s,
  normalization, zero_init_residual: "instance" (Pawlowski et al. 2019) or "batch", and
    whether each residual block's last normalization starts at gamma = 0,
  input_channels: 1 or 3, the channels the backbone sees,
  head: a name in needles_tf.models.heads.HEADS: "embedding" or "instance",
  pooling, pooling_kwargs: a name in needles_tf.layers.pooling.POOLINGS and its
    arguments (e.g. {"r0": 5.0} for "lse_lba"),
  num_classes: K sigmoid outputs (1 for a binary task),
  pixel_head: optional; "pixelcam" adds a foreground/background head next to the
    image head (needles_tf/models/pixelcam.py),
  dtype_policy: Keras dtype policy of the backbone, e.g. "float32" or
    "mixed_bfloat16" (heads and pooling always compute in float32); "auto"
    takes bf16 only where it is measured faster (needles_tf/precision.py).

What a run ships and is evaluated as (`float32_model`) computes in float32 whatever
the training precision: in bf16 the same weights gave different probabilities under
a static batch size (Keras predict: the fused instance-norm kernel) and a dynamic one
(the SavedModel), e.g. 0.0026 and 0.0237 for one image.
"""

from __future__ import annotations

import ml_collections

from needles_tf.models.backbone import get_backbone_class
from needles_tf.models.classifier import ImagePreprocessing, NeedleClassifier
from needles_tf.models.heads import get_head_class
from needles_tf.models.pixelcam import get_pixel_head_class
from needles_tf.precision import resolve_dtype_policy

# `model` fields a config may leave out (the experiment configs write them all), and what
# leaving one out means: Keras's global dtype policy, the pooling's own arguments, no pixel
# head. A backbone's own fields default to its constructor's (Backbone.from_model_config).
OPTIONAL_FIELDS = {"dtype_policy": None, "pooling_kwargs": {}, "pixel_head": ""}


def _optional(config, name: str):
    return config[name] if name in config else OPTIONAL_FIELDS[name]


def build_model(config) -> NeedleClassifier:
    """The classifier of the `model` ConfigDict `config` (needles_tf/configs/); calling it
    returns a dict of named outputs."""
    backbone_class = get_backbone_class(config.extractor)
    head_class = get_head_class(config.head)
    if config.num_classes < 1:
        raise ValueError(f"num_classes={config.num_classes}: expected at least 1.")
    dtype = resolve_dtype_policy(_optional(config, "dtype_policy"))
    head = head_class(
        config.num_classes,
        config.pooling,
        dict(_optional(config, "pooling_kwargs") or {}),
        name=f"{config.head}_head",
    )
    backbone = backbone_class.from_model_config(config, dtype)
    pixel_head = _optional(config, "pixel_head")
    if pixel_head:
        head = get_pixel_head_class(pixel_head).for_backbone(
            head, backbone, name=f"{pixel_head}_head"
        )
    return NeedleClassifier(
        backbone,
        head,
        ImagePreprocessing(config.input_channels, dtype=dtype, name="preprocessing"),
        name=f"{config.extractor}_{config.head}_{config.pooling}",
    )


def float32_model(model: NeedleClassifier, config) -> NeedleClassifier:
    """`model` itself if it computes in float32, else a float32 copy with its weights
    (mixed-precision weights are float32 already, so the copy is exact)."""
    if compute_dtypes(model) == {"float32"}:
        return model
    copy = build_model(float32_config(config))
    copy.set_weights(model.get_weights())
    return copy


def float32_config(config) -> ml_collections.ConfigDict:
    """The model `config` with `dtype_policy` float32."""
    return ml_collections.ConfigDict({**config.to_dict(), "dtype_policy": "float32"})


def compute_dtypes(model: NeedleClassifier) -> set[str]:
    """The compute dtypes of the model's preprocessing and backbone layers."""
    layers = [model.preprocessor, *model.backbone.layers]
    return {layer.dtype_policy.compute_dtype for layer in layers}
