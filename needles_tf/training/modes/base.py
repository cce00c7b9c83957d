"""What a training mode gives the training loop, and the registry of modes.

A mode is how a run turns its data and a NeedleClassifier into a compiled Keras
model: its checks of the config, its datasets, its training model, its callbacks
and its start-up work. `needles_tf.train` is one loop for all of them; `--mode`
chooses (`config.mode`). A new mode is one module of this package with one class
registered in TRAINING_MODES, plus its import in `__init__.py`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
import ml_collections

from needles_tf.data import pipeline
from needles_tf.registry import Registry

TRAINING_MODES: Registry[type[TrainingMode]] = Registry("--mode")


class Check(NamedTuple):
    """One condition on the config: when `ok` is false, "FLAG=VALUE: expected EXPECTED."."""

    ok: bool
    flag: str
    value: Any
    expected: str


class TrainingMode:
    """One way of training. Subclasses set `name` (its --mode) and override what differs.

    `defaults()` is the mode's config section, `config.<name>`, written once here: every
    family's config has every mode's section, so `--config.<name>.FIELD` works with any
    of them, and a run reads only its own mode's section.
    """

    name: str = ""
    # PreciseBatchNorm re-estimates batch-norm statistics before each validation (False:
    # only before the first step, for modes whose steps train on the frozen statistics)
    precise_bn_before_validation: bool = True

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    @classmethod
    def defaults(cls) -> dict[str, Any] | None:
        """The fields of this mode's config section and their defaults; None: no section."""
        return None

    @property
    def settings(self) -> ml_collections.ConfigDict:
        """This mode's section of the config."""
        return self.config[self.name]

    def checks(self) -> list[Check]:
        """Conditions on the config this mode needs, beyond those every run needs."""
        return []

    def datasets(self, builder, data_dir: str | None) -> pipeline.Splits:
        """The run's training stream, validation and test batches."""
        raise NotImplementedError

    def splits(
        self, stream, validation, test, builder, data_dir: str | None, classes: int
    ) -> pipeline.Splits:
        """The Splits of a training `stream` (a function returning the stream and its steps
        per epoch), with the first training images for batch-norm statistics."""
        config = self.config
        _, steps_per_epoch = stream()
        statistics = pipeline.first_images(
            config.dataset, config.precise_bn_images, config.batch_size, data_dir, classes
        )
        return pipeline.Splits(
            lambda step: stream()[0].skip(step),
            validation,
            test,
            steps_per_epoch,
            pipeline.class_names(builder),
            statistics,
        )

    def training_model(self, inference: keras.Model, optimizer) -> keras.Model:
        """A compiled model that trains `inference`'s weights (shared, not copied)."""
        raise NotImplementedError

    def callbacks(self, inference: keras.Model, training: keras.Model) -> list:
        """Callbacks of this mode, run before the loop's own."""
        return []

    def start(self, inference: keras.Model, training: keras.Model) -> None:
        """Work at the start of a fresh run (not a resumed one) with no --init_from."""


def mode_sections() -> dict[str, dict[str, Any]]:
    """Every registered mode's config section, by mode name."""
    return {
        name: defaults
        for name, mode in sorted(TRAINING_MODES.items())
        if (defaults := mode.defaults()) is not None
    }
