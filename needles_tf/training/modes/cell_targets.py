"""Per-cell targets: every grid cell's logit trained against a map of annotated needles.

The instance head already gives a logit per grid cell (one window of the input); sparse-
shot localization (Panteli et al., "Sparse-shot Learning with Exclusive Cross-Entropy
for Extremely Many Localisations", ICCV 2021) supervises those logits directly: 1 at the
cells of an annotated needle, 0 everywhere else (needles_tf/data/dense.py), with the
loss the run names (needles_tf.training.losses.DENSE_LOSSES). The head's cells were
chosen over a decoder to a finer resolution: a needle (28 px) spans three to four cells
of the stride-8 grid, so the grid already resolves one needle from the next, and the
trained model stays an ordinary needles_tf model (export, streaming, slides, the
instance map as its saliency) whose image logit pools the same cells.
"""

from __future__ import annotations

import functools
import math

import keras
from keras import ops

from needles_tf.cli import ConfigError
from needles_tf.data import dense, pipeline
from needles_tf.models.backbone import get_backbone_class
from needles_tf.training.losses import DENSE_LOSSES, ExclusiveCrossEntropy
from needles_tf.training.modes.base import TRAINING_MODES, Check, TrainingMode


class CellTargetTraining(keras.Model):
    """Images -> per-cell logits (B, h, w, K) of `inference`'s instance head."""

    def __init__(self, inference: keras.Model, prior_probability: float = 0.0, **kwargs):
        """`prior_probability` > 0 sets the classifier's bias to its logit (Lin et al.,
        "Focal Loss for Dense Object Detection", ICCV 2017, §4.1), so that the rare
        positives do not begin with half the loss of the whole background. The kernel
        keeps its initializer (Lin et al. draw it with standard deviation 0.01), so cells
        whose features are large can start far from the prior."""
        super().__init__(**kwargs)
        head = inference.head
        if not hasattr(head, "instance_classifier"):
            raise ValueError(
                f"--head={type(head).__name__}: dense localization trains the instance "
                "head's per-cell logits; use --head=instance."
            )
        self.inference = inference
        if prior_probability > 0:
            bias = head.instance_classifier.bias
            logit = math.log(prior_probability / (1.0 - prior_probability))
            bias.assign(ops.full(bias.shape, logit, bias.dtype))
        # The epoch the loss anneals with (exclusive cross-entropy), set by LossEpoch.
        self.loss_epoch = keras.Variable(0.0, trainable=False, name="loss_epoch")

    def call(self, images, training=False):
        grid = self.inference.embed(images, training=training)
        return self.inference.head.instance_classifier(ops.cast(grid, "float32"))


class LossEpoch(keras.callbacks.Callback):
    """Tells the loss which epoch training is in (its thresholds anneal with it)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.loss_epoch.assign(float(epoch))


@TRAINING_MODES.register("cell_targets")
class CellTargets(TrainingMode):
    """Training crops with the annotated fraction's targets; whole canvases, every needle a
    target, for validation and test; the loss by name (DENSE_LOSSES), ROC AUC of the cells."""

    name = "cell_targets"

    @classmethod
    def defaults(cls) -> dict:
        return {
            # cross_entropy | focal | exclusive_cross_entropy (training.losses.DENSE_LOSSES)
            "loss": "exclusive_cross_entropy",
            "annotation_fraction": 1.0,  # of each training canvas's needles; the rest unannotated
            # a cell is a target if its window centre is this close (pixels, each axis) to
            # an annotated needle's centre: one stride, about two cells per axis
            "target_radius": 8.0,
            # every cell starts at this probability (the classifier's bias; Lin et al. 2017
            # §4.1); 0 keeps the default initialization
            "prior_probability": 0.01,
            "crop_size": 161,  # training crops (pixels): 17x17 cells of the BagNet-33
            "focal": {"alpha": 0.25, "gamma": 2.0},  # Lin et al. 2017
            "exclusive_cross_entropy": {  # the authors' defaults (losses.ExclusiveCrossEntropy)
                "exclusivity_threshold": 0.5,
                "background_sampling": 0.5,
                "exclusivity_midpoint": 50.0,
                "background_midpoint": 150.0,
                "annealing_temperature": 10.0,
                "focal_alpha": 0.2,
                "focal_gamma": 0.1,
            },
        }

    def checks(self) -> list[Check]:
        settings = self.settings
        return [
            Check(
                settings.loss in DENSE_LOSSES,
                "--config.cell_targets.loss",
                settings.loss,
                f"one of {sorted(DENSE_LOSSES)}",
            ),
            Check(
                0.0 < settings.annotation_fraction <= 1.0,
                "--config.cell_targets.annotation_fraction",
                settings.annotation_fraction,
                "a fraction in (0, 1] of each training canvas's needles",
            ),
        ]

    def datasets(self, builder, data_dir: str | None) -> pipeline.Splits:
        config, settings = self.config, self.settings
        geometry = (
            get_backbone_class(config.model.extractor)
            .from_model_config(config.model, "float32")
            .geometry
        )
        name, radius = config.dataset, settings.target_radius
        try:
            stream = functools.partial(
                dense.training_stream,
                name,
                settings.annotation_fraction,
                geometry,
                radius,
                settings.crop_size,
                config.batch_size,
                config.seed,
                data_dir,
            )
            validation, test = (
                dense.evaluation_batches(name, split, geometry, radius, config.batch_size, data_dir)
                for split in ("validation", "test")
            )
        except ValueError as error:
            raise ConfigError(str(error)) from error
        return self.splits(stream, validation, test, builder, data_dir, 1)

    def training_model(self, inference: keras.Model, optimizer) -> keras.Model:
        settings = self.settings
        training = CellTargetTraining(inference, settings.prior_probability, name="training")
        loss = DENSE_LOSSES[settings.loss](settings, self.config.seed)
        if isinstance(loss, ExclusiveCrossEntropy):
            loss.epoch = training.loss_epoch
        training.compile(
            optimizer=optimizer,
            loss=loss,
            metrics=[keras.metrics.AUC(from_logits=True, name="auc")],
        )
        return training

    def callbacks(self, inference: keras.Model, training: keras.Model) -> list:
        return [LossEpoch()]
