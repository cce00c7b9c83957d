"""PixelCAM: a foreground/background classifier in the encoder's pixel-feature space.

Guichemerre et al., "PixelCAM: Pixel Class Activation Mapping for Histology Image
Classification and ROI Localization" (MIDL 2025): next to the image classifier, a
1x1 convolution classifies each position of the encoder's last feature map as
foreground or background; it is trained from pixel pseudo-labels of a weakly
supervised teacher (needles_tf/localization/pseudo_labels.py) with a partial
cross-entropy (needles_tf/training/losses.py), jointly with the image classifier.

Resolution, three variants (`--config.model.pixel_head`):

- `pixelcam`, the paper's: the classifier runs on the backbone's grid (the BagNet
  grid, or the multi-resolution extractor's fused map) and its one logit per cell
  is upsampled bilinearly to the input with the grid's geometry
  (needles_tf/localization/upsample.py). A 1x1 convolution commutes with bilinear
  interpolation (whose weights sum to one), so this is exactly the classifier
  applied to the features upsampled to input resolution, at 1/D of the memory.
- `pixelcam_subpixel`: the same 1x1 convolution gives stride² logits per cell, the
  pixels of the stride x stride block at the centre of the cell's window: a map at
  input resolution, where the bilinear one is capped by the grid's (see
  SubpixelPixelCAMHead);
- `pixelcam_window`: each cell's logits are a block as wide as its window (in whole
  strides), overlapping blocks averaged, so the map covers every pixel the grid
  sees (WindowPixelCAMHead).

One sigmoid logit replaces the paper's 2-way softmax: softmax(a, b)_fg = sigmoid(b - a).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import ops

from needles_tf.models.heads import MILHead
from needles_tf.registry import Registry

# '' (no pixel head) is also a valid --config.model.pixel_head; callers test it first.
PIXEL_HEADS: Registry[type[keras.layers.Layer]] = Registry("--config.model.pixel_head")


def register_pixel_head(name: str) -> Callable[[type], type]:
    """Class decorator: `--config.model.pixel_head=name` adds this head (and it serializes)."""

    def register(cls: type) -> type:
        PIXEL_HEADS.register(name)(
            keras.saving.register_keras_serializable(package="needles_tf")(cls)
        )
        return cls

    return register


def get_pixel_head_class(name: str) -> type[keras.layers.Layer]:
    return PIXEL_HEADS.get_or_raise(name)


@register_pixel_head("pixelcam")
class PixelCAMHead(keras.layers.Layer):
    """An image head (embedding or instance, unchanged) plus a per-position fg/bg logit.

    Outputs: the image head's, and `pixel_logits` (B, h, w, 1), class-agnostic.
    Streaming (tile_state, merge_states, finish, tile_outputs) is the image head's,
    with the pixel logits carried as one more per-piece map.
    """

    def __init__(self, image_head: MILHead, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.image_head = image_head
        self.pixel_classifier = keras.layers.Dense(
            self.logits_per_cell, dtype="float32", name="pixel_classifier"
        )

    @classmethod
    def for_backbone(cls, image_head: MILHead, backbone, **kwargs) -> PixelCAMHead:
        """The head for `backbone`'s grid."""
        return cls(image_head, **kwargs)

    @property
    def logits_per_cell(self) -> int:
        return 1

    # What the rest of needles_tf reads of a head, the image head's but for the map served.
    @property
    def default_saliency(self) -> str:
        return "pixelcam"

    @property
    def num_classes(self) -> int:
        return self.image_head.num_classes

    @property
    def pooling(self):
        return self.image_head.pooling

    @property
    def pooling_name(self) -> str:
        return self.image_head.pooling_name

    @property
    def has_attention(self) -> bool:
        return self.image_head.has_attention

    def build(self, input_shape):
        if not self.image_head.built:  # deserialized heads come built
            self.image_head.build(input_shape)
        self.pixel_classifier.build(input_shape)

    def pixel_logits(self, embedding):
        return self.pixel_classifier(ops.cast(embedding, "float32"))

    def call(self, embedding):
        return {**self.image_head(embedding), "pixel_logits": self.pixel_logits(embedding)}

    def tile_state(self, embedding):
        """The image head's, plus each cell's largest pixel logit: a piece keeps one
        value per cell (what the grid map holds), not the cell's block."""
        state, maps = self.image_head.tile_state(embedding)
        cells = ops.max(self.pixel_logits(embedding), axis=-1, keepdims=True)
        return state, {**maps, "pixel_logits": cells}

    def merge_states(self, a: dict, b: dict) -> dict:
        return self.image_head.merge_states(a, b)

    def finish(self, state: dict) -> dict:
        return self.image_head.finish(state)

    def tile_outputs(self, maps: dict, state: dict) -> dict:
        image_maps = {key: value for key, value in maps.items() if key != "pixel_logits"}
        outputs = self.image_head.tile_outputs(image_maps, state)
        return {**outputs, "pixel_logits": maps["pixel_logits"]}

    def get_config(self):
        return {**super().get_config(), "image_head": keras.layers.serialize(self.image_head)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["image_head"] = keras.layers.deserialize(config["image_head"])
        return cls(**config)


@register_pixel_head("pixelcam_subpixel")
class SubpixelPixelCAMHead(PixelCAMHead):
    """PixelCAM whose 1x1 convolution gives each grid cell stride² logits, one per pixel
    of the stride x stride block at the centre of its window (sub-pixel convolution,
    Shi et al., CVPR 2016): a map at input resolution from the same features.

    Bilinear upsampling of one logit per cell (`PixelCAMHead`, the paper's) caps what a
    map can reach at the grid's resolution; on nMNIST canvas_64 (receptive field 33,
    stride 8) the PxAP of a map that knows the mask but has one value per cell is 0.16
    (benchmarks/grid_pxap_ceiling.py). The cell's features see its whole window, so they
    can say which of its pixels hold the object.

    `block_cells` = m > 1 widens each cell's block to (m·stride)², overlapping its
    neighbours' (see WindowPixelCAMHead).
    """

    def __init__(self, image_head: MILHead, stride: int, block_cells: int = 1, **kwargs):
        self.stride, self.block_cells = int(stride), int(block_cells)
        if self.block_cells < 1:
            raise ValueError(f"block_cells={block_cells}: expected at least 1.")
        super().__init__(image_head, **kwargs)

    @classmethod
    def for_backbone(cls, image_head, backbone, **kwargs):
        return cls(image_head, backbone.stride, **kwargs)

    @property
    def logits_per_cell(self) -> int:
        return (self.block_cells * self.stride) ** 2

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "block_cells": self.block_cells}


@register_pixel_head("pixelcam_window")
class WindowPixelCAMHead(SubpixelPixelCAMHead):
    """PixelCAM whose cells each predict the largest block of whole stride steps that
    fits in their window, (m·stride)² pixels with m = receptive_field // stride, and
    a pixel's logit is the mean of the blocks that cover it (overlap-add).

    The sub-pixel head covers only the band of window centres, [(rf - stride)/2,
    (rf + stride)/2 + stride·(h - 1)): 32 of 64 pixels per axis on nMNIST canvas_64, the
    margins held from the outermost blocks. Whole-window blocks cover
    [(rf - m·stride)/2, ...+ stride·(h - 1) + m·stride), every pixel some cell sees
    (on canvas_64, [0, 56)), and each pixel is judged by every cell whose window holds
    it. On the grid (streaming, slides) a cell holds the largest logit of its block.
    """

    @classmethod
    def for_backbone(cls, image_head, backbone, **kwargs):
        block_cells = max(1, backbone.receptive_field // backbone.stride)
        return cls(image_head, backbone.stride, block_cells, **kwargs)
