"""Keras callbacks of a training run: crash-safe run state, NaN stop, saliency overlays."""

from __future__ import annotations

import csv
import io
import math
import pathlib
import shutil
import tempfile
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from needles_tf.atomic import atomic_write_text
from needles_tf.localization.methods import default_saliency_method
from needles_tf.plots import saliency_overlay
from needles_tf.run_directory import RunDirectory, RunState
from needles_tf.training.checkpointing import CheckpointManager, atomic_save_weights


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite, or the weights diverged."""


# A run whose trainable weights grow past this has diverged: a healthy canvas_64 run
# (cpu_canvas64) ends with trainable weights below 2.5, since every convolution is
# followed by a normalization. Statistics such as batch norm's moving variance (1.3e3 in
# that run) grow with the activations and are only required to be finite.
DIVERGED_WEIGHT = 1e6


def largest_weight(model: keras.Model) -> float:
    """The largest magnitude among the trainable weights; infinite or NaN if any weight,
    trainable or a statistic, is."""
    trainable = {weight.path for weight in model.trainable_weights}
    largest = 0.0
    for weight in model.weights:
        value = np.abs(keras.ops.convert_to_numpy(weight))
        if value.size:
            peak = float(value.max())  # NaN if any element is
            if not math.isfinite(peak):
                return peak
            if weight.path in trainable:
                largest = max(largest, peak)
    return largest


class RunProgress(keras.callbacks.Callback):
    """Checkpoints every epoch (and every `every_steps` steps), keeps the best weights, logs.

    `state` is a new RunState or a checkpoint's; it is updated in place.
    `inference_model` shares the trained weights and is what `best-*.weights.h5` holds
    (no optimizer). Only the chief writes to the run directory; other workers keep their
    best weights in a private temporary directory (`best_weights_path`), so that none of
    them reads a file the chief may still be writing.
    """

    def __init__(
        self,
        state: RunState,
        manager: CheckpointManager,
        run: RunDirectory,
        inference_model: keras.Model,
        steps_per_epoch: int,
        every_steps: int = 0,
        monitor: str = "val_accuracy",
        is_chief: bool = True,
    ):
        super().__init__()
        self.state = state
        self.manager = manager
        self.run = run
        self.inference_model = inference_model
        self.steps_per_epoch = steps_per_epoch
        self.every_steps = every_steps
        self.monitor = monitor
        self.is_chief = is_chief
        self.private_dir = None
        if not is_chief:
            self.private_dir = pathlib.Path(tempfile.mkdtemp(prefix="needles_tf-worker-"))

    def best_weights_path(self) -> pathlib.Path:
        """Where this process finds the best weights: its own copy, else the chief's file."""
        name = self.state.best_weights
        if self.private_dir is not None and (self.private_dir / name).exists():
            return self.private_dir / name
        return self.run.path / name

    def remove_private_files(self) -> None:
        if self.private_dir is not None:
            shutil.rmtree(self.private_dir, ignore_errors=True)

    def on_epoch_begin(self, epoch, logs=None):
        self.learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"The training loss became {float(loss)} at epoch {self.state.epoch + 1}, "
                f"step {self.state.global_step + 1}. The last checkpoint in "
                f"{self.manager.directory} is intact."
            )
        self.state.global_step += 1
        step = self.state.global_step
        # Not at an epoch's last step: the epoch's end saves once validation is done. A
        # checkpoint there would resume into an epoch with no steps left, and validate never.
        if self.every_steps and step % self.every_steps == 0 and step % self.steps_per_epoch:
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        row["learning_rate"] = self.learning_rate  # the epoch's rate (read at its start)
        if self.monitor not in row:
            raise KeyError(f"{self.monitor!r} is not among the epoch's metrics {sorted(row)}.")
        state = self.state
        state.history.append(row)
        state.epoch = epoch + 1
        previous = state.best_weights
        if state.best is None or self._better(row[self.monitor], state.best):
            state.best = row[self.monitor]
            state.best_epoch = epoch + 1
            state.best_weights = self.run.best_weights_name(epoch + 1)
            directory = self.run.path if self.is_chief else self.private_dir
            atomic_save_weights(self.inference_model, directory / state.best_weights)
        self._save()
        if self.is_chief:
            atomic_write_text(self.run.history_file, history_csv(state.history))
            if previous and previous != state.best_weights:
                (self.run.path / previous).unlink(missing_ok=True)

    def _better(self, value: float, best: float) -> bool:
        """A loss is better lower, a score higher."""
        return value < best if self.monitor.endswith("loss") else value > best

    def _save(self):
        """Checkpoints the chief's model, unless a weight overflowed (then stops: the last
        checkpoint stays the newest)."""
        if not self.is_chief:
            return
        largest = largest_weight(self.model)
        if not largest <= DIVERGED_WEIGHT:  # NaN compares False
            raise NonFiniteLossError(
                f"A weight reached {largest:.3g} by epoch {self.state.epoch + 1}, step "
                f"{self.state.global_step}: the run diverged (weights above "
                f"{DIVERGED_WEIGHT:g} are never checkpointed). The last checkpoint in "
                f"{self.manager.directory} is intact."
            )
        self.manager.save(self.model, self.state.to_dict())


def history_csv(history: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in history for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return text.getvalue()


class SaliencyOverlays(keras.callbacks.Callback):
    """Each epoch, a fixed validation batch with the model's default saliency, to TensorBoard."""

    def __init__(
        self,
        inference_model: keras.Model,
        images: np.ndarray,
        boxes: np.ndarray | None,
        labels: np.ndarray,
        log_dir: pathlib.Path,
    ):
        super().__init__()
        self.inference_model = inference_model
        self.images, self.boxes, self.labels = images, boxes, labels
        self.writer = tf.summary.create_file_writer(str(pathlib.Path(log_dir) / "saliency"))

    def on_epoch_end(self, epoch, logs=None):
        outputs = self.inference_model.predict_on_batch(self.images)
        height, width = self.images.shape[1:3]
        method = default_saliency_method(self.inference_model)
        maps = method.from_outputs(outputs, height, width, self.inference_model.geometry)
        maps = keras.ops.convert_to_numpy(maps.unit)
        overlays = np.stack(
            [
                saliency_overlay(
                    image, maps[i, ..., 0], None if self.boxes is None else self.boxes[i]
                )
                for i, image in enumerate(self.images)
            ]
        )
        probabilities = np.asarray(outputs["probability"])[:, 0]
        caption = ", ".join(
            f"y={int(y)} p={p:.2f}" for y, p in zip(self.labels[:, 0], probabilities, strict=True)
        )
        with self.writer.as_default():
            tf.summary.image(
                "validation_saliency",
                overlays,
                step=epoch + 1,
                max_outputs=len(overlays),
                description=f"Image, saliency (inferno), needle box (green). {caption}",
            )
        self.writer.flush()
