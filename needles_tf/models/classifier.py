"""NeedleClassifier: preprocessing -> backbone -> MIL head, one model with public parts.

In the manner of keras-hub's task models: a functional `keras.Model` built from
its parts, whose config is the parts' configs, and whose methods give the rest
of needles_tf what it needs without graph surgery:

  model(images)                  -> {logits, probability, saliency[, attention]}
  model.embed(images)            -> the backbone's grid (B, h, w, D), for tiling
  model.classify_embedding(grid) -> the head's outputs for a grid
  model.geometry, model.local_cells, model.backbone, model.head, model.preprocessor
"""

from __future__ import annotations

import keras
from keras import ops

from needles_tf.models.backbone import Backbone
from needles_tf.models.heads import MILHead


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


@keras.saving.register_keras_serializable(package="needles_tf")
class NeedleClassifier(keras.Model):
    """Images in [0, 255] (B, H, W, 1 or 3) -> the head's dict of named outputs."""

    def __init__(
        self, backbone: Backbone, head: MILHead, preprocessor: ImagePreprocessing, **kwargs
    ):
        images = keras.Input((None, None, None), name="image")
        outputs = head(backbone(preprocessor(images)))
        super().__init__(images, outputs, **kwargs)
        self.backbone = backbone
        self.head = head
        self.preprocessor = preprocessor

    def embed(self, images, training: bool = False):
        """The backbone's embedding grid of `images` (values in [0, 255])."""
        return self.backbone(self.preprocessor(images), training=training)

    def classify_embedding(self, grid, training: bool = False) -> dict:
        """The head's outputs for an embedding grid (whole, or stitched from tiles)."""
        return self.head(grid, training=training)

    @property
    def geometry(self) -> tuple[int, int]:
        """(receptive field, stride) of the saliency grid's cells, in input pixels."""
        return self.backbone.geometry

    @property
    def local_cells(self) -> bool:
        """Whether each grid cell depends on its window alone (tiling is then exact)."""
        return self.backbone.local_cells

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.layers.serialize(self.backbone),
            "head": keras.layers.serialize(self.head),
            "preprocessor": keras.layers.serialize(self.preprocessor),
        }

    @classmethod
    def from_config(cls, config: dict) -> NeedleClassifier:
        config = dict(config)
        for part in ("backbone", "head", "preprocessor"):
            config[part] = keras.layers.deserialize(config[part])
        return cls(**config)
