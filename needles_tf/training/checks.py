"""The config checks every run needs, with its mode's own: each failure is one line
naming the flag (or config field) and what it accepts."""

from __future__ import annotations

import ml_collections

from needles_tf.cli import ConfigError
from needles_tf.layers.pooling import POOLINGS
from needles_tf.models.backbone import BACKBONES
from needles_tf.models.heads import HEADS
from needles_tf.precision import POLICIES as PRECISIONS
from needles_tf.training import distribute, schedules
from needles_tf.training.modes import TRAINING_MODES, Check, TrainingMode
from needles_tf.training.optimizers import OPTIMIZERS

# The validation metrics whose best epoch a run keeps ("pixel_loss": lowest).
BEST_METRICS = ("accuracy", "auc", "pixel_loss")


def training_mode(config: ml_collections.ConfigDict) -> TrainingMode:
    """The mode `config.mode` names, made for `config`."""
    try:
        return TRAINING_MODES.get_or_raise(config.mode)(config)
    except ValueError as error:
        raise ConfigError(str(error)) from error


def check_config(config: ml_collections.ConfigDict, mode: TrainingMode) -> None:
    """Raises ConfigError naming the first flag (or field) at fault and what it accepts."""
    model = config.model
    checks = [
        Check(model.pooling in POOLINGS, "--pooling", model.pooling, f"one of {sorted(POOLINGS)}"),
        Check(model.head in HEADS, "--head", model.head, f"one of {sorted(HEADS)}"),
        Check(
            model.extractor in BACKBONES,
            "--extractor",
            model.extractor,
            f"one of {sorted(BACKBONES)}",
        ),
        Check(
            model.dtype_policy in PRECISIONS,
            "--dtype_policy",
            model.dtype_policy,
            f"one of {PRECISIONS}",
        ),
        Check(model.width > 0, "--width", model.width, "a positive capacity s"),
        Check(
            config.strategy in distribute.STRATEGIES,
            "--strategy",
            config.strategy,
            f"one of {sorted(distribute.STRATEGIES)}",
        ),
        Check(
            config.optimizer in OPTIMIZERS,
            "--config.optimizer",
            config.optimizer,
            f"one of {sorted(OPTIMIZERS)}",
        ),
        Check(config.epochs >= 1, "--epochs", config.epochs, "at least 1"),
        Check(
            config.precise_bn_images >= 0,
            "--config.precise_bn_images",
            config.precise_bn_images,
            "0 (moving averages) or a number of training images",
        ),
        Check(
            config.best_metric in BEST_METRICS[:2]
            or (config.best_metric == "pixel_loss" and mode.name == "pixelcam"),
            "--config.best_metric",
            config.best_metric,
            "'accuracy' or 'auc' (the validation metric whose best epoch is kept), or "
            "'pixel_loss' with --mode=pixelcam",
        ),
        Check(config.batch_size >= 1, "--batch_size", config.batch_size, "at least 1"),
        Check(config.train_size >= 0, "--train_size", config.train_size, "0 (whole split) or more"),
        Check(
            0.0 <= config.positive_fraction <= 1.0,
            "--positive_fraction",
            config.positive_fraction,
            "a fraction in [0, 1]",
        ),
        Check(
            config.train_size > 0 or config.positive_fraction == 0.5,
            "--positive_fraction",
            config.positive_fraction,
            "0.5 unless --train_size is set: it is the share of positives in that subset",
        ),
        Check(config.learning_rate > 0, "--config.learning_rate", config.learning_rate, "> 0"),
        Check(
            config.lr_schedule in schedules.LR_SCHEDULES,
            "--config.lr_schedule",
            config.lr_schedule,
            f"one of {sorted(schedules.LR_SCHEDULES)}",
        ),
        Check(
            0 <= config.warmup_epochs < config.epochs,
            "--config.warmup_epochs",
            config.warmup_epochs,
            f"at least 0 and fewer than --epochs={config.epochs}",
        ),
        Check(
            config.batch_size >= 1 and config.effective_batch_size % config.batch_size == 0,
            "--config.effective_batch_size",
            config.effective_batch_size,
            f"a multiple of --batch_size={config.batch_size}",
        ),
        Check(
            config.checkpoint_every_steps >= 0,
            "--config.checkpoint_every_steps",
            config.checkpoint_every_steps,
            "0 (per epoch only) or more",
        ),
    ]
    fields = getattr(BACKBONES.get(model.extractor), "RECEPTIVE_FIELDS", None)
    if fields:  # a backbone whose receptive field is a setting says which it can build
        checks.append(
            Check(
                model.receptive_field in fields,
                "--receptive_field",
                model.receptive_field,
                f"one of {list(fields)}",
            )
        )
    for check in checks + mode.checks():
        if not check.ok:
            raise ConfigError(f"{check.flag}={check.value!r}: expected {check.expected}.")
