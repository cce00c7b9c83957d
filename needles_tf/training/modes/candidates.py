"""Candidate cells: training whose cost per epoch does not grow with the image.

Under max pooling the loss of an image reaches one grid cell per class: a positive's
needle, a negative's most needle-like clutter (Pawlowski et al. 2019, "Needles in
Haystacks", §2.2). Those cells change slowly from one epoch to the next. This mode
keeps, for every training image, the `top_k` cells of largest instance logit found
by its last scan of the whole image, and trains on their receptive-field windows
alone: each step crops the windows, recomputes their cells with gradients, and pools
them with the head's own pooling. A step's cost is that of `top_k` windows per
image, whatever the image's size.

The candidates are refreshed by scans: all images before the first epoch, then at
the start of each epoch the images whose index is that epoch modulo `rescan_every`,
so that every image is rescanned once in `rescan_every` epochs at an even cost per
epoch. What this approximates is measured where it is paid: before a slice's
candidates are replaced, its fresh scan says for how many images the cached
candidates still held the image's largest cell (`candidate_agreement` in
history.csv). Where they do, the candidates' pooled logit is the whole image's
(exact under max pooling; tests/test_candidates.py).

The cells are a non-trainable weight of the training model, and the epoch of the
last scan another, so a checkpoint holds them and a resumed run goes on with the
candidates the uninterrupted run had. Validation and test see whole images. Cells
must depend on their window alone (batch normalization, at inference statistics, as
in sparse_backprop). TensorFlow only, like sparse_backprop.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from needles_tf.data import pipeline
from needles_tf.training.modes.base import TRAINING_MODES, Check
from needles_tf.training.modes.image import ImageLabels
from needles_tf.training.modes.sparse_backprop import crop_windows, tiled_grid


@keras.saving.register_keras_serializable(package="needles_tf")
class CandidateTraining(keras.Model):
    """Images -> logits of `classifier`; in training, ({"image", "index"}) -> the logits of
    each image's candidate cells, pooled by the head."""

    def __init__(
        self,
        classifier: keras.Model,
        images: int,
        top_k: int = 8,
        tile_size: int = 1024,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not classifier.local_cells:
            raise ValueError(
                "--mode=candidates recomputes grid cells from their windows, so each cell must "
                "depend on its window alone: use the bagnet extractor with "
                "--config.model.normalization=batch."
            )
        if not hasattr(classifier.head, "instance_classifier"):
            raise ValueError(
                f"--head={type(classifier.head).__name__}: --mode=candidates ranks cells by "
                "the instance head's per-cell logits; use --head=instance."
            )
        if top_k < 1:
            raise ValueError(f"--config.candidates.top_k={top_k}: expected at least 1.")
        self.classifier = classifier
        self.images, self.top_k, self.tile_size = int(images), int(top_k), int(tile_size)
        # (row, column) of each training image's candidate cells, best first
        self.cells = self.add_weight(
            shape=(self.images, self.top_k, 2),
            initializer="zeros",
            dtype="int32",
            trainable=False,
            name="candidate_cells",
        )
        # the epoch whose scan the cells hold (-1: none yet)
        self.scanned_epoch = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(-1),
            dtype="int32",
            trainable=False,
            name="scanned_epoch",
        )
        # that scan's share of images whose cached candidates held their maximum (-1: a
        # scan of all images, with nothing cached before it; not NaN, which a checkpoint
        # takes for a diverged run)
        self.agreement = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(-1.0),
            dtype="float32",
            trainable=False,
            name="candidate_agreement",
        )

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):
            return self.candidate_logits(inputs["image"], inputs["index"], training)
        return self.classifier(inputs, training=False)["logits"]

    def candidate_logits(self, images, index, training=False):
        """(B, K) logits of the images from their candidate cells' windows alone."""
        backbone = self.classifier.backbone
        x = self.classifier.preprocessor(images)
        cells = tf.gather(self.cells, tf.cast(index, tf.int32))  # (B, k, 2)
        batch = tf.shape(cells)[0]
        image = tf.repeat(tf.range(batch), self.top_k)
        flat = tf.concat([image[:, None], tf.reshape(cells, [-1, 2])], axis=1)
        windows = crop_windows(x, flat, backbone.receptive_field, backbone.stride)
        embedded = backbone(windows, training=False)[:, 0, 0, :]  # (B·k, D)
        grid = tf.reshape(embedded, [batch, 1, self.top_k, embedded.shape[-1]])
        return self.classifier.head(tf.cast(grid, "float32"), training=training)["logits"]

    @tf.function
    def scan(self, images):
        """(B, h, w) the whole images' cell scores: the largest instance logit over classes."""
        x = self.classifier.preprocessor(images)
        grid = tiled_grid(self.classifier.backbone, x, self.tile_size)
        logits = self.classifier.head.instance_classifier(tf.cast(grid, "float32"))
        return tf.reduce_max(logits, axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "classifier": keras.layers.serialize(self.classifier),
            "images": self.images,
            "top_k": self.top_k,
            "tile_size": self.tile_size,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.layers.deserialize(config["classifier"])
        return cls(**config)


def top_cells(scores: np.ndarray, k: int) -> np.ndarray:
    """(B, k, 2) (row, column) of the k largest of each (h, w) score map, best first; a
    grid of fewer than k cells repeats its best."""
    flat = scores.reshape(len(scores), -1)
    order = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    if order.shape[1] < k:
        order = np.concatenate([order, np.repeat(order[:, :1], k - order.shape[1], 1)], 1)
    return np.stack(np.divmod(order, scores.shape[2]), axis=-1).astype(np.int32)


def held_the_maximum(scores: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(B,) whether each image's candidate `cells` hold its largest score of `scores`."""
    rows = np.arange(len(scores))[:, None]
    cached = scores[rows, cells[..., 0], cells[..., 1]].max(axis=1)
    return cached >= scores.reshape(len(scores), -1).max(axis=1)


class Rescan(keras.callbacks.Callback):
    """Scans images at the start of epochs and replaces their candidate cells: all of them
    before the first epoch, the slice `index % every == epoch % every` before each later
    one. `images(keep)` gives ordered (image, index) batches of the training images that
    `keep(index)` picks. Adds `candidate_agreement` to each epoch's logs."""

    def __init__(self, training: CandidateTraining, images, every: int):
        super().__init__()
        self.training, self.images, self.every = training, images, every

    def on_epoch_begin(self, epoch, logs=None):
        scanned = int(keras.ops.convert_to_numpy(self.training.scanned_epoch))
        if scanned >= epoch:  # resumed within an epoch whose scan the checkpoint holds
            return
        keep = None if scanned < 0 else self.slice_of(epoch)
        cells = np.array(keras.ops.convert_to_numpy(self.training.cells))
        held, scanned_images = 0, 0
        progress = keras.utils.Progbar(None, unit_name="image", verbose=1 if keep is None else 0)
        for images, index in self.images(keep):
            scores = self.training.scan(images).numpy()
            index = index.numpy()
            if keep is not None:
                held += int(held_the_maximum(scores, cells[index]).sum())
            cells[index] = top_cells(scores, self.training.top_k)
            scanned_images += len(index)
            progress.add(len(index))
        agreement = held / scanned_images if keep is not None and scanned_images else -1.0
        self.training.cells.assign(cells)
        self.training.agreement.assign(agreement)
        self.training.scanned_epoch.assign(epoch)

    def slice_of(self, epoch: int):
        """The test of an index for the images rescanned before `epoch`."""
        return lambda index: tf.equal(index % self.every, epoch % self.every)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            agreement = float(keras.ops.convert_to_numpy(self.training.agreement))
            logs["candidate_agreement"] = agreement if agreement >= 0 else math.nan


@TRAINING_MODES.register("candidates")
class Candidates(ImageLabels):
    """Image-level labels on each image's candidate cells, refreshed by rolling scans."""

    name = "candidates"
    precise_bn_before_validation = False  # its steps train on the statistics set at start

    @classmethod
    def defaults(cls) -> dict:
        return {
            "top_k": 8,  # candidate cells kept per training image
            "rescan_every": 4,  # epochs in which every image is scanned once, a slice an epoch
            "scan_batch_size": 8,  # whole images per scan step
            "tile_size": 1024,  # scans run the backbone tile by tile above this side
        }

    def checks(self) -> list[Check]:
        settings, config = self.settings, self.config
        return [
            *super().checks(),
            Check(settings.top_k >= 1, "--config.candidates.top_k", settings.top_k, "at least 1"),
            Check(
                settings.rescan_every >= 1,
                "--config.candidates.rescan_every",
                settings.rescan_every,
                "at least 1 (epochs over which every training image is scanned once)",
            ),
            Check(
                not any(config.augmentation.to_dict().values()),
                "--config.augmentation",
                config.augmentation.to_dict(),
                "no warps with --mode=candidates (cells are kept per image)",
            ),
        ]

    with_index = True

    def datasets(self, builder, data_dir: str | None) -> pipeline.Splits:
        self.data_dir = data_dir
        return super().datasets(builder, data_dir)

    def training_images(self, keep=None) -> tf.data.Dataset:
        """Ordered (image, index) batches of the training images `keep(index)` picks."""
        config = self.config
        return pipeline.training_images(
            config.dataset,
            config.train_size or None,
            config.positive_fraction,
            config.oversample_minority,
            config.seed,
            self.data_dir,
            self.settings.scan_batch_size,
            keep,
        )

    def image_model(self, inference: keras.Model) -> keras.Model:
        settings = self.settings
        examples = self.training_images().examples
        return CandidateTraining(
            inference, examples, settings.top_k, settings.tile_size, name="training"
        )

    def callbacks(self, inference: keras.Model, training: keras.Model) -> list:
        return [Rescan(training, self.training_images, self.settings.rescan_every)]
