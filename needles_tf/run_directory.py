"""A training run's directory: every path in it, its state, its config, its lock, and the
one definition of a finished run.

    DIR/config.json                  the run's config, written as training starts
    DIR/.lock                        held by the run that trains here (training.run_lock)
    DIR/checkpoints/ckpt-STEP/       resumable state: weights, optimizer, RunState
    DIR/best-epochNNNN.weights.h5    the weights of the best validation epoch
    DIR/history.csv                  one row per epoch
    DIR/tensorboard/                 scalars and saliency overlays
    DIR/saved_model/VERSION/, DIR/model.keras   the export (needles_tf.export)
    DIR/metrics.json                 the test metrics of the best epoch: written last
    DIR/eval/                        what `python -m needles_tf.evaluate` writes

Train, evaluate, export, package, sweep and sweep_report all ask this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import ml_collections

from needles_tf.atomic import atomic_write_text, writable_directory
from needles_tf.cli import ConfigError
from needles_tf.packaged import KERAS_FILE
from needles_tf.run_lock import RunLockedError, run_lock

# Fields a resumed run may change; any other difference from config.json is an error.
RESUMABLE_CHANGES = (
    "epochs",
    "strategy",
    "checkpoint_every_steps",
    "overlay_images",
    "learning_rate",  # to go on at a lower rate, e.g. after a NaN loss
    "export",
)


class RunError(ConfigError):
    """A run directory that cannot be used as asked; the message names the flag."""


@dataclasses.dataclass
class RunState:
    """Where a run stands; saved in every checkpoint (its `state.json`)."""

    epoch: int = 0  # completed epochs
    global_step: int = 0  # completed steps (global batches)
    best: float | None = None  # best value of the monitored metric
    best_epoch: int | None = None
    best_weights: str | None = None  # file name in the run directory
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # one per epoch

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> RunState:
        return cls(**state)


class RunDirectory:
    """The paths of one run and what can be read back from them."""

    def __init__(self, path: str | os.PathLike, flag: str = "--model_dir"):
        self.path = pathlib.Path(path)
        self.flag = flag  # what error messages name

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    @property
    def config_file(self) -> pathlib.Path:
        return self.path / "config.json"

    @property
    def metrics_file(self) -> pathlib.Path:
        return self.path / "metrics.json"

    @property
    def history_file(self) -> pathlib.Path:
        return self.path / "history.csv"

    @property
    def checkpoints(self) -> pathlib.Path:
        return self.path / "checkpoints"

    @property
    def tensorboard(self) -> pathlib.Path:
        return self.path / "tensorboard"

    @property
    def saved_model(self) -> pathlib.Path:
        return self.path / "saved_model"

    @property
    def keras_file(self) -> pathlib.Path:
        return self.path / KERAS_FILE

    @property
    def eval_dir(self) -> pathlib.Path:
        return self.path / "eval"

    @staticmethod
    def best_weights_name(epoch: int) -> str:
        return f"best-epoch{epoch:04d}.weights.h5"

    def best_weights(self) -> pathlib.Path:
        """The run's best-epochNNNN.weights.h5 (the latest, should there be several)."""
        best = sorted(self.path.glob("best-epoch*.weights.h5"))
        if not best:
            raise FileNotFoundError(
                f"{self.flag}={self.path}: no best-epochNNNN.weights.h5; train at least one epoch."
            )
        return best[-1]

    def writable(self) -> RunDirectory:
        """This directory, made if need be; a RunError says why it cannot be written."""
        try:
            writable_directory(self.path, self.flag)
        except ValueError as error:
            raise RunError(str(error)) from error
        return self

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Holds the run's lock; a RunError names the run that holds it."""
        try:
            with run_lock(self.path):
                yield
        except RunLockedError as error:
            raise RunError(str(error)) from error

    def read_config(self) -> ml_collections.ConfigDict:
        """The run's config.json, with the fields of older versions renamed."""
        if not self.config_file.exists():
            raise FileNotFoundError(
                f"{self.flag}={self.path}: no config.json; is it a training run?"
            )
        return ml_collections.ConfigDict(upgraded_config(json.loads(self.config_file.read_text())))

    def write_config(self, config: ml_collections.ConfigDict) -> None:
        """config.json, written as training starts: a start that fails earlier leaves none."""
        text = json.dumps(json.loads(config.to_json_best_effort()), indent=2)
        if not self.config_file.exists() or self.config_file.read_text() != text:
            atomic_write_text(self.config_file, text)

    def check_resumable(self, config: ml_collections.ConfigDict, unused: tuple[str, ...] = ()):
        """The run here (if any) must have `config`, bar RESUMABLE_CHANGES and the `unused`
        fields (sections that do not act on this run); else a RunError names the fields."""
        if not self.config_file.exists():
            return
        current = json.loads(config.to_json_best_effort())
        saved = upgraded_config(json.loads(self.config_file.read_text()))
        resumable = set(RESUMABLE_CHANGES) | set(unused)
        if current.get("lr_schedule") == "cosine":
            resumable.discard("epochs")  # the cosine's length: more epochs would bend the rest
        changed = sorted(
            key
            for key in set(saved) | set(current)
            if key not in resumable and saved.get(key) != current.get(key)
        )
        if changed:
            raise RunError(
                f"{self.flag}={self.path} holds a run with a different config (fields "
                f"{changed} differ from {self.config_file}). Use a new {self.flag}, or the "
                "same settings to resume."
            )

    def metrics(self) -> dict[str, Any] | None:
        """metrics.json, or None before the run has finished once."""
        if not self.metrics_file.exists():
            return None
        return json.loads(self.metrics_file.read_text())

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_text(self.metrics_file, json.dumps(metrics, indent=2, allow_nan=False))

    def is_finished(self, epochs: int | None = None) -> bool:
        """Whether the run has trained `epochs` epochs (default: its config.json's) and
        written its test metrics, the last thing a run writes."""
        metrics = self.metrics()
        if metrics is None:
            return False
        if epochs is None:
            if not self.config_file.exists():
                return False
            epochs = json.loads(self.config_file.read_text())["epochs"]
        return metrics.get("epochs") == epochs

    def load_model(self):
        """The run's model with its best weights, computing in float32 whatever the training
        precision (as the export does), and its config."""
        from needles_tf.models.factory import build_model, float32_config  # Keras: on demand

        config = self.read_config()
        model = build_model(float32_config(config.model))
        model.load_weights(self.best_weights())
        return model, config


# Fields of configs written before training modes were named: old name -> new path.
_MOVED_FIELDS = {
    "sparse_top_k": "sparse_backprop.top_k",
    "sparse_tile_size": "sparse_backprop.tile_size",
    "loss": "cell_targets.loss",
    "annotation_fraction": "cell_targets.annotation_fraction",
    "target_radius": "cell_targets.target_radius",
    "prior_probability": "cell_targets.prior_probability",
    "crop_size": "cell_targets.crop_size",
    "focal": "cell_targets.focal",
    "exclusive_cross_entropy": "cell_targets.exclusive_cross_entropy",
}


def upgraded_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config.json of an older version in today's fields: `backprop` became `mode`, and
    each mode's settings moved into its section (CHANGELOG.md)."""
    if "mode" in config:
        return config
    config = dict(config)
    backprop = config.pop("backprop", "dense")
    if "loss" in config:
        config["mode"] = "cell_targets"
    elif dict(config["model"]).get("pixel_head"):
        config["mode"] = "pixelcam"
    else:
        config["mode"] = "sparse_backprop" if backprop == "sparse" else "image"
    for old, new in _MOVED_FIELDS.items():
        if old in config:
            section, field = new.split(".")
            config.setdefault(section, {})[field] = config.pop(old)
    return config
