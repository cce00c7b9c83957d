r"""Train a needles_tf model: one loop for every training mode.

    python -m needles_tf.train --pooling=lse_lba
    python -m needles_tf.train --preset=cpu_quick --tfds_manual_dir=PATH_TO_MNIST
    python -m needles_tf.train --config=multires:cpu_quick --dataset=nmnist/canvas_128
    python -m needles_tf.train --config=nmnist --config.model.width=0.25 \
        --model_dir=runs/width_quarter

--config names a family of needles_tf/configs (nmnist, ncamelyon, multires, pixelcam,
sparse_shot) or a .py file of your own, optionally with :PRESET (`--preset` is the
same thing); needles_tf/configs/flags.py states which setting wins. --mode chooses
how the run trains (needles_tf.training.modes).

The loop: resolve the config, open the run directory (needles_tf.run_directory: its
layout, lock and resume), build the data and the model as the mode says, fit from
the saved position, test the best epoch, export. Rerun the same command after a crash
to resume. Protocol (Pawlowski et al. 2019 §3): validation chooses the checkpoint
whose test metrics are reported.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import sys
from typing import Any

import keras
import ml_collections
import tensorflow as tf
from absl import app, flags, logging

from needles_tf import export
from needles_tf.cli import ConfigError, define_flags, one_line_usage_errors
from needles_tf.configs import flags as config_flags
from needles_tf.data import pipeline, targets
from needles_tf.metrics import strict_json_metrics
from needles_tf.models.factory import build_model
from needles_tf.run_directory import RunDirectory, RunState
from needles_tf.training import distribute, schedules
from needles_tf.training.callbacks import NonFiniteLossError, RunProgress, SaliencyOverlays
from needles_tf.training.checkpointing import CheckpointManager
from needles_tf.training.checks import check_config, training_mode
from needles_tf.training.modes import TRAINING_MODES, TrainingMode
from needles_tf.training.optimizers import make_optimizer
from needles_tf.training.precise_bn import PreciseBatchNorm, batch_norm_layers

__all__ = ["ConfigError", "train", "train_curriculum"]

define_flags("model_dir", "tfds_data_dir", "tfds_manual_dir")
flags.adopt_module_key_flags(config_flags)  # --config, --preset and the plain flags


def train(
    config: ml_collections.ConfigDict,
    model_dir: str | pathlib.Path,
    *,
    tfds_data_dir: str | None = None,
    tfds_manual_dir: str | None = None,
    extra_callbacks: tuple[keras.callbacks.Callback, ...] = (),
    verbose: int | str = "auto",
) -> dict[str, Any]:
    """Trains (or resumes, or finds finished) the run in `model_dir`; returns metrics.json.

    The chief holds the run directory's lock throughout: a second run there stops at
    once with a ConfigError naming the holder."""
    mode = training_mode(config)
    check_config(config, mode)
    run = RunDirectory(model_dir).writable()
    strategy = distribute.make_strategy(config.strategy)
    chief = distribute.is_chief(strategy)
    distribute.replica_batch_size(strategy, config.batch_size)
    with run.lock() if chief else contextlib.nullcontext():
        return _train_locked(
            config,
            mode,
            run,
            strategy,
            chief,
            tfds_data_dir=tfds_data_dir,
            tfds_manual_dir=tfds_manual_dir,
            extra_callbacks=extra_callbacks,
            verbose=verbose,
        )


def _train_locked(
    config: ml_collections.ConfigDict,
    mode: TrainingMode,
    run: RunDirectory,
    strategy: tf.distribute.Strategy,
    chief: bool,
    *,
    tfds_data_dir: str | None,
    tfds_manual_dir: str | None,
    extra_callbacks: tuple[keras.callbacks.Callback, ...],
    verbose: int | str,
) -> dict[str, Any]:
    keras.utils.set_random_seed(config.seed)  # tf.data's seeded shuffles depend on it too
    try:
        builder = pipeline.ensure_built(config.dataset, tfds_data_dir, tfds_manual_dir)
    except ValueError as error:  # an unknown dataset name
        raise ConfigError(str(error)) from error
    data = mode.datasets(builder, tfds_data_dir)
    # Decided before training, so that every worker takes the same branch below.
    finished = run.is_finished(config.epochs)
    if chief:
        run.check_resumable(config, unused=_unused_sections(mode))

    keras.utils.set_random_seed(config.seed)  # again: loading data may draw from `random`
    with strategy.scope():
        try:  # e.g. a pooling the head cannot use, sparse backprop of non-local cells
            inference = build_model(config.model)
            _check_images_cover_the_field(data.validation, inference, config.dataset)
            optimizer = make_optimizer(config, data.steps_per_epoch)
            training = mode.training_model(inference, optimizer)
        except ValueError as error:
            raise ConfigError(str(error)) from error
    distribute.build_for_fit(training, data.train_from(0), strategy)

    manager = CheckpointManager(run.checkpoints)
    state = _restore(manager, training, run, config, data.steps_per_epoch)
    if state is None:
        state = RunState()
        if config.init_from:
            _initialize_from(inference, RunDirectory(config.init_from, "--init_from"))
        else:
            try:
                mode.start(inference, training)
            except ValueError as error:
                raise ConfigError(str(error)) from error
    if chief:
        run.write_config(config)
    progress = None
    if state.epoch < config.epochs:
        progress = RunProgress(
            state,
            manager,
            run,
            inference,
            data.steps_per_epoch,
            config.checkpoint_every_steps,
            is_chief=chief,
            # "accuracy" (Pawlowski et al. 2019), "auc", the mean over classes (Yao et al.
            # 2018, §4.2), or "pixel_loss" (PixelCAM)
            monitor=f"val_{config.best_metric}",
        )
        callbacks = [
            *mode.callbacks(inference, training),
            progress,
            keras.callbacks.TensorBoard(log_dir=str(run.tensorboard)),
            *extra_callbacks,
        ]
        if config.precise_bn_images and batch_norm_layers(inference):
            at_start = state.global_step == 0
            before_validation = mode.precise_bn_before_validation
            callbacks.insert(
                0, PreciseBatchNorm(inference, data.statistics, at_start, before_validation)
            )
        if chief and config.overlay_images:
            overlays = _saliency_overlays(config, inference, run, tfds_data_dir)
            callbacks.insert(callbacks.index(progress) + 1, overlays)
        if verbose == "auto":
            verbose = 1 if sys.stdout.isatty() else 2  # progress bars on a terminal only
        _fit(training, data, state, config.epochs, callbacks, verbose)

    if finished:
        return run.metrics()
    if progress is None:
        inference.load_weights(run.path / state.best_weights)
    else:
        inference.load_weights(progress.best_weights_path())
        progress.remove_private_files()
    test_metrics = training.evaluate(data.test, return_dict=True, verbose=0)
    best_row = state.history[state.best_epoch - 1]
    metrics = {
        "best_epoch": state.best_epoch,
        "epochs": state.epoch,
        "validation": {k[4:]: v for k, v in best_row.items() if k.startswith("val_")},
        "test": {k: float(v) for k, v in test_metrics.items()},
    }
    if chief:  # the export first: metrics.json marks a run as finished
        if config.export:
            export.export_model(inference, config, run.path, class_names=data.class_names)
        run.write_metrics(strict_json_metrics(metrics))
    return metrics


def _unused_sections(mode: TrainingMode) -> tuple[str, ...]:
    """The config sections of the other modes: changing them does not change this run."""
    return tuple(name for name in TRAINING_MODES if name != mode.name)


def _restore(
    manager: CheckpointManager, training, run: RunDirectory, config, steps_per_epoch: int
) -> RunState | None:
    """The newest checkpoint's state, its weights and optimizer restored; None if none."""
    try:
        restored = manager.restore_latest(training)
    except RuntimeError as error:
        raise ConfigError(f"--model_dir={run.path}: {error}") from error
    if restored is None:
        return None
    checkpoint, saved = restored
    state = RunState.from_dict(saved)
    rate = schedules.learning_rate(config, steps_per_epoch)
    if not callable(rate):  # a constant rate is an optimizer variable: the checkpoint's
        training.optimizer.learning_rate = rate  # --config.learning_rate may have changed
    print(
        f"Resuming from {checkpoint}: {state.epoch} epochs and {state.global_step} steps done.",
        flush=True,
    )
    return state


def _initialize_from(inference: keras.Model, run: RunDirectory) -> None:
    """Loads `run`'s best weights into `inference` (a fully convolutional model: any canvas)."""
    try:
        weights = run.best_weights()
        inference.load_weights(weights)
    except FileNotFoundError as error:
        raise ConfigError(str(error)) from error
    except ValueError as error:  # another architecture
        raise ConfigError(
            f"--init_from={run.path}: its weights do not fit this model ({error})"
        ) from error
    print(f"Starting from {weights}", flush=True)


def train_curriculum(
    config: ml_collections.ConfigDict, model_dir: str | pathlib.Path, **kwargs
) -> dict[str, Any]:
    """Each stage of `config.curriculum` ("DATASET:EPOCHS") as its own resumable run in
    `model_dir/stageN-DATASET`, started from the previous stage's best weights (the first
    from `config.init_from`, if set); returns the last stage's metrics."""
    previous, metrics = config.init_from, {}
    for index, stage in enumerate(config.curriculum):
        dataset, _, epochs = str(stage).rpartition(":")
        if not dataset or not epochs.isdigit() or int(epochs) < 1:
            raise ConfigError(f"--config.curriculum: {stage!r} is not DATASET:EPOCHS.")
        stage_config = ml_collections.ConfigDict(config.to_dict())
        stage_config.update(dataset=dataset, epochs=int(epochs), init_from=previous)
        stage_config.curriculum = ()
        stage_config.lock()
        stage_dir = pathlib.Path(model_dir) / f"stage{index}-{dataset.replace('/', '_')}"
        print(f"Stage {index + 1}/{len(config.curriculum)}: {dataset}, {epochs} epochs")
        metrics = train(stage_config, stage_dir, **kwargs)
        previous = str(stage_dir)
    return metrics


def _check_images_cover_the_field(images: tf.data.Dataset, model, dataset: str) -> None:
    """A valid-padded backbone has no grid cell on an image smaller than its receptive field."""
    shape = tf.nest.flatten(images.element_spec)[0].shape
    field = model.geometry[0]
    if None not in shape[1:3] and min(shape[1:3]) < field:
        raise ValueError(
            f"--dataset={dataset}: its {shape[1]}x{shape[2]} images are smaller than the "
            f"model's receptive field of {field} pixels; expected a larger canvas or a "
            "smaller --receptive_field."
        )


def _saliency_overlays(config, inference, run: RunDirectory, data_dir: str | None):
    images, boxes, labels = targets.first_examples(
        config.dataset, "validation", config.overlay_images, config.model.num_classes, data_dir
    )
    return SaliencyOverlays(inference, images, boxes, labels, run.tensorboard)


def _fit(training, data: pipeline.Splits, state: RunState, epochs: int, callbacks, verbose):
    """model.fit from the saved position: the rest of a broken epoch first, then whole epochs."""
    common = dict(validation_data=data.validation, callbacks=callbacks, verbose=verbose)
    done_in_epoch = state.global_step - state.epoch * data.steps_per_epoch
    if done_in_epoch >= data.steps_per_epoch:  # only checkpoints of versions before 0.2
        raise ConfigError(
            f"The newest checkpoint ends epoch {state.epoch + 1} without its validation; "
            "delete it to resume from the one before."
        )
    if done_in_epoch:
        training.fit(
            data.train_from(state.global_step),
            steps_per_epoch=data.steps_per_epoch - done_in_epoch,
            initial_epoch=state.epoch,
            epochs=state.epoch + 1,
            shuffle=False,
            **common,
        )
    if state.epoch < epochs:
        training.fit(
            data.train_from(state.global_step),
            steps_per_epoch=data.steps_per_epoch,
            initial_epoch=state.epoch,
            epochs=epochs,
            shuffle=False,
            **common,
        )


def default_model_dir(config: ml_collections.ConfigDict) -> pathlib.Path:
    model = config.model
    name = f"{config.dataset.replace('/', '_')}-{model.extractor}-{model.head}-{model.pooling}"
    return pathlib.Path("runs") / name


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TFDS logs each split it opens at INFO
    try:
        config = config_flags.resolved_config()
    except ValueError as error:  # e.g. an unknown --preset
        raise app.UsageError(str(error)) from error
    model_dir = pathlib.Path(flags.FLAGS.model_dir or default_model_dir(config))
    print(f"Model directory: {model_dir}", flush=True)
    try:
        run = train_curriculum if config.curriculum else train
        metrics = run(
            config,
            model_dir,
            tfds_data_dir=flags.FLAGS.tfds_data_dir,
            tfds_manual_dir=flags.FLAGS.tfds_manual_dir,
        )
    except ConfigError as error:  # RunError too
        raise app.UsageError(str(error)) from error
    except OSError as error:  # a full disk, a read-only or deleted directory: one line
        sys.exit(f"Stopped: {error}")
    except NonFiniteLossError as error:
        sys.exit(
            f"Stopped: {error} To resume from it at a tenth of the rate, rerun the same "
            f"command with --config.learning_rate={config.learning_rate / 10:g}."
        )
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    app.run(one_line_usage_errors(main), flags_parser=config_flags.parse_flags)
