"""Sparse backpropagation through MIL pooling: large images trained at about inference's cost.

With max pooling the loss reaches only the grid cells that hold the maximum
(Pawlowski et al. 2019, "Needles in Haystacks", §2.2); every other cell's
activations are stored and back-propagated for nothing. `SparseBackprop` wraps a
NeedleClassifier for training so that a step

1. runs the backbone over the whole image in inference mode, outside the gradient,
   tile by tile when the image is larger than `tile_size` (in graph mode each tile's
   activations are freed once its grid is computed),
2. selects the cells the pooled value depends on: those the gradient of the head
   reaches (for max pooling, each channel's or class's argmax), or the `top_k` of
   largest gradient per image (soft poolings),
3. recomputes those cells' receptive-field windows, cropped from the input, with
   gradients, and
4. puts the recomputed cells into the grid as `grid + (cell - stop_gradient(cell))`,
   which adds exactly zero to the forward value: the image's logits are the
   whole-image ones; the gradient is exact for max pooling and the top-k truncation
   of the exact one for soft poolings.

Cells must depend on their window alone (`backbone.local_cells`: batch normalization
at inference; not instance normalization nor the multires extractor). Batch
normalization therefore runs on frozen statistics in sparse steps: `PreciseBatchNorm`
estimates them from training images before a run's first step, and they stay fixed for
the whole run, in training and validation alike, as the weights learn to work with them.

TensorFlow only: the number of cells per batch is known at run time alone.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from needles_tf.localization.tiling import axis_spans
from needles_tf.training.modes.base import TRAINING_MODES
from needles_tf.training.modes.image import ImageLabels


@keras.saving.register_keras_serializable(package="needles_tf")
class SparseBackprop(keras.Model):
    """Images -> logits of `classifier`; in training, gradients flow through selected windows."""

    def __init__(self, classifier: keras.Model, top_k: int = 0, tile_size: int = 1024, **kwargs):
        super().__init__(**kwargs)
        if not classifier.local_cells:
            raise ValueError(
                "--mode=sparse_backprop recomputes grid cells from their windows, so each "
                "cell must depend on its window alone: use the bagnet extractor with "
                "--config.model.normalization=batch (instance normalization and the multires "
                "extractor couple every cell to the whole image)."
            )
        if top_k < 0:
            raise ValueError(
                f"--config.sparse_backprop.top_k={top_k}: expected 0 (every cell the "
                "gradient reaches) or a positive count per image."
            )
        if tile_size < classifier.geometry[0]:
            raise ValueError(
                f"--config.sparse_backprop.tile_size={tile_size}: expected at least the receptive "
                f"field, {classifier.geometry[0]} pixels."
            )
        self.classifier = classifier
        self.top_k = int(top_k)
        self.tile_size = int(tile_size)

    def call(self, images, training=False):
        if not training:
            return self.classifier(images, training=False)["logits"]
        return self.sparse_logits(images)

    def sparse_logits(self, images):
        backbone, head = self.classifier.backbone, self.classifier.head
        x = self.classifier.preprocessor(images)
        grid = tf.stop_gradient(self.tiled_grid(x))
        cells = tf.stop_gradient(self.selected_cells(grid))
        # One cell more, whose update is multiplied by zero: the convolutions never see
        # an empty batch (a saturated head's gradient reaches no cell at all).
        cells = tf.concat([cells, tf.zeros([1, 3], tf.int32)], axis=0)
        weight = tf.concat([tf.ones([tf.shape(cells)[0] - 1, 1]), tf.zeros([1, 1])], axis=0)
        windows = crop_windows(x, cells, backbone.receptive_field, backbone.stride)
        recomputed = backbone(windows, training=False)[:, 0, 0, :]
        recomputed = tf.cast(recomputed, grid.dtype)
        delta = (recomputed - tf.stop_gradient(recomputed)) * tf.cast(weight, grid.dtype)
        # delta is exactly zero: the cells' values stay the whole image's, with their gradient
        grid = grid + tf.scatter_nd(cells, delta, tf.shape(grid, out_type=tf.int32))
        return head(grid, training=True)["logits"]

    def tiled_grid(self, x) -> tf.Tensor:
        """The backbone's grid of preprocessed images, in inference mode (`tiled_grid`)."""
        return tiled_grid(self.classifier.backbone, x, self.tile_size)

    def selected_cells(self, grid) -> tf.Tensor:
        """(N, 3) int32 [image, row, column] of the cells the loss can reach through the head."""
        score = head_gradient_norm(self.classifier.head, grid)  # (B, h, w)
        shape = tf.shape(score)
        flat = tf.reshape(score, [shape[0], -1])
        if self.top_k:
            values, index = tf.math.top_k(flat, k=tf.minimum(self.top_k, tf.shape(flat)[1]))
            image = tf.broadcast_to(tf.range(shape[0])[:, None], tf.shape(index))
            keep = values > 0
            image, index = image[keep], index[keep]
        else:
            where = tf.cast(tf.where(flat > 0), tf.int32)
            image, index = where[:, 0], where[:, 1]
        return tf.stack([image, index // shape[2], index % shape[2]], axis=1)

    def get_config(self):
        return {
            **super().get_config(),
            "classifier": keras.layers.serialize(self.classifier),
            "top_k": self.top_k,
            "tile_size": self.tile_size,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.layers.deserialize(config["classifier"])
        return cls(**config)


def tiled_grid(backbone: keras.Model, x, tile_size: int) -> tf.Tensor:
    """`backbone`'s grid of preprocessed images, in inference mode; images with a side over
    `tile_size` go tile by tile, each tile after the last, so that memory holds one tile's
    activations (tiles overlap by RF - stride: needles_tf.localization.tiling)."""
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None or max(height, width) <= tile_size:
        return backbone(x, training=False)
    rows = axis_spans(height, tile_size, *backbone.geometry)
    columns = axis_spans(width, tile_size, *backbone.geometry)
    previous, grid_rows = [], []
    for row in rows:
        parts = []
        for column in columns:
            with tf.control_dependencies(previous):  # one tile at a time
                tile = tf.identity(x[:, row.start : row.stop, column.start : column.stop])
            parts.append(backbone(tile, training=False))
            previous = [parts[-1]]
        grid_rows.append(tf.concat(parts, axis=2))
    return tf.concat(grid_rows, axis=1)


def head_gradient_norm(head: keras.layers.Layer, grid) -> tf.Tensor:
    """Σ_k Σ_c |∂ logit_k / ∂ cell_c| over classes k and the channels c where the cell is not
    exactly zero: (B, h, w), zero where the head does not look (for max pooling, everywhere
    but the maxima).

    Both backbones end in a ReLU, whose derivative at an output of zero is zero: a channel
    that is zero everywhere in an image (common in a young network) ties every cell for
    its maximum, and its gradient, split between them, stops at the ReLU. Dropping zeros
    keeps such channels from selecting the whole grid, and removes nothing the dense
    gradient has.
    """
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(grid)
        logits = head(grid, training=False)["logits"]
        per_class = [tf.reduce_sum(logits[:, k]) for k in range(logits.shape[-1])]
    nonzero = tf.cast(tf.not_equal(grid, 0), grid.dtype)
    score = tf.zeros(tf.shape(grid)[:3], grid.dtype)
    for total in per_class:
        score += tf.reduce_sum(tf.abs(tape.gradient(total, grid)) * nonzero, axis=-1)
    del tape
    return score


def crop_windows(images, cells, receptive_field: int, stride: int) -> tf.Tensor:
    """(N, RF, RF, C) windows of `images` (B, H, W, C) at the grid `cells` (N, 3)."""
    offsets = tf.range(receptive_field)
    rows = cells[:, 1:2] * stride + offsets  # (N, RF)
    columns = cells[:, 2:3] * stride + offsets
    count = tf.shape(cells)[0]
    index = tf.stack(
        [
            tf.broadcast_to(cells[:, 0, None, None], [count, receptive_field, receptive_field]),
            tf.broadcast_to(rows[:, :, None], [count, receptive_field, receptive_field]),
            tf.broadcast_to(columns[:, None, :], [count, receptive_field, receptive_field]),
        ],
        axis=-1,
    )
    return tf.gather_nd(images, index)


@TRAINING_MODES.register("sparse_backprop")
class SparseBackpropTraining(ImageLabels):
    """Image-level labels with sparse steps: the loss and metrics of `image`, the gradient
    through the selected windows only. Batch normalization runs on the statistics
    PreciseBatchNorm estimates before the first step, never re-estimated."""

    name = "sparse_backprop"
    precise_bn_before_validation = False

    @classmethod
    def defaults(cls) -> dict:
        return {
            "top_k": 0,  # cells per image in sparse steps; 0: all the gradient reaches
            "tile_size": 1024,  # sparse steps run the backbone tile by tile above this
        }

    def image_model(self, inference: keras.Model) -> keras.Model:
        return SparseBackprop(
            inference, self.settings.top_k, self.settings.tile_size, name="training"
        )
