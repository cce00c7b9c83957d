"""Image-level labels: the pooled logits against each image's label, backpropagated through
every grid cell (Pawlowski et al. 2019, "Needles in Haystacks", §3)."""

from __future__ import annotations

import functools

import keras

from needles_tf.cli import ConfigError
from needles_tf.data import pipeline
from needles_tf.training.modes.base import TRAINING_MODES, Check, TrainingMode


@TRAINING_MODES.register("image")
class ImageLabels(TrainingMode):
    """Binary cross-entropy of the image logits; accuracy and ROC AUC as metrics."""

    name = "image"
    # batches of ({"image", "index"}, label): for modes that keep a state per training image
    with_index = False

    def checks(self) -> list[Check]:
        pixel_head = self.config.model.pixel_head
        return [
            Check(
                not pixel_head,
                "--config.model.pixel_head",
                pixel_head,
                "'' unless --mode=pixelcam (it trains the pixel head)",
            )
        ]

    def datasets(self, builder, data_dir: str | None) -> pipeline.Splits:
        config = self.config
        classes = pipeline.class_count(builder)
        if classes != config.model.num_classes:
            raise ConfigError(
                f"--config.model.num_classes={config.model.num_classes}: {config.dataset} has "
                f"{classes} sigmoid output(s)."
            )
        stream = functools.partial(
            pipeline.training_stream,
            config.dataset,
            config.train_size or None,
            config.positive_fraction,
            config.oversample_minority,
            config.batch_size,
            config.seed,
            data_dir,
            classes,
            augmentation=config.augmentation.to_dict(),  # all zero: no warp
            with_index=self.with_index,
        )
        validation, test = (
            pipeline.evaluation_batches(config.dataset, split, config.batch_size, data_dir, classes)
            for split in ("validation", "test")
        )
        return self.splits(stream, validation, test, builder, data_dir, classes)

    def image_model(self, inference: keras.Model) -> keras.Model:
        """The model whose output is the image logits (a view of `inference`)."""
        return keras.Model(inference.input, inference.output["logits"], name="training")

    def training_model(self, inference: keras.Model, optimizer) -> keras.Model:
        training = self.image_model(inference)
        classes = self.config.model.num_classes
        training.compile(
            optimizer=optimizer,
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[
                keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy"),
                keras.metrics.AUC(
                    from_logits=True,
                    name="auc",
                    multi_label=classes > 1,
                    num_labels=classes if classes > 1 else None,
                ),
            ],
        )
        return training
