r"""Train a needles_tf model: config -> strategy -> data, model -> fit -> test -> export.

    python -m needles_tf.train --pooling=lse_lba
    python -m needles_tf.train --preset=cpu_quick --tfds_manual_dir=PATH_TO_MNIST
    python -m needles_tf.train --config=multires:cpu_quick --dataset=nmnist/canvas_128
    python -m needles_tf.train --config=nmnist --config.model.width=0.25 \
        --model_dir=runs/width_quarter

--config names a family of needles_tf/configs (nmnist, ncamelyon, multires) or
a .py file of your own, optionally with :PRESET (`--preset` is the same thing).

The model directory receives `config.json`, `checkpoints/` (resumable: rerun
the same command after a crash), `best-epochNNNN.weights.h5`, `history.csv`,
`metrics.json`, `tensorboard/`, and the export (`saved_model/1/`, `model.keras`).
Protocol (Pawlowski et al. 2019 §3): validation accuracy chooses the checkpoint whose test
metrics are reported.
"""

from __future__ import annotations

import contextlib
import functools
import json
import pathlib
import sys
from typing import Any

import keras
import ml_collections
import tensorflow as tf
from absl import app, flags, logging
from ml_collections import config_flags

from needles_tf import configs, export, runs
from needles_tf.atomic import atomic_write_text, writable_directory
from needles_tf.cli import one_line_usage_errors
from needles_tf.data import dense, pipeline, targets
from needles_tf.layers.pooling import POOLINGS
from needles_tf.localization.pseudo_labels import SeedRecipe
from needles_tf.metrics import strict_json_metrics
from needles_tf.models.backbone import BACKBONES, get_backbone_class
from needles_tf.models.bagnet import THREE_BY_THREE_BLOCKS
from needles_tf.models.factory import build_model
from needles_tf.models.heads import HEADS
from needles_tf.precision import POLICIES as PRECISIONS
from needles_tf.precision import resolve_dtype_policy
from needles_tf.training import distribute, schedules
from needles_tf.training.callbacks import (
    NonFiniteLossError,
    RunState,
    SaliencyOverlays,
    new_run_state,
)
from needles_tf.training.checkpointing import CheckpointManager
from needles_tf.training.losses import DENSE_LOSSES, ExclusiveCrossEntropy
from needles_tf.training.modes.cell_targets import DenseTraining, LossEpoch
from needles_tf.training.modes.pixelcam import (
    PixelCAMTraining,
    initialize_from_teacher,
    load_teacher,
)
from needles_tf.training.modes.sparse_backprop import SparseBackprop
from needles_tf.training.precise_bn import PreciseBatchNorm, batch_norm_layers
from needles_tf.training.run_lock import RunLockedError, run_lock

OPTIMIZERS = {
    "rmsprop": keras.optimizers.RMSprop,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": lambda **kwargs: keras.optimizers.SGD(momentum=0.9, **kwargs),
}
BACKPROP = ("dense", "sparse")
# Fields a resumed run may change; any other difference from config.json is an error.
RESUMABLE_CHANGES = (
    "epochs",
    "strategy",
    "checkpoint_every_steps",
    "overlay_images",
    "learning_rate",  # to go on at a lower rate, e.g. after a NaN loss
    "export",
)

# The command line as parse_flags rewrote it: config_flags finds the --config.FIELD
# overrides here rather than in sys.argv, which still has --preset and family names.
_CONFIG_ARGV: list[str] = []
_CONFIG = config_flags.DEFINE_config_file(
    "config",
    str(configs.config_path(configs.DEFAULT)),
    f"Experiment config: one of {list(configs.CONFIGS)} or a .py file, optionally with "
    ":PRESET; override fields with --config.FIELD=VALUE, e.g. --config.model.pooling=lse_lba.",
    lock_config=True,
    sys_argv=_CONFIG_ARGV,
)
_PRESET = flags.DEFINE_string("preset", None, "A preset of the config: --config=CONFIG:PRESET.")
_MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "Where checkpoints, logs and the export go (default: runs/<run name>)."
)
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory.")
_TFDS_MANUAL_DIR = flags.DEFINE_string(
    "tfds_manual_dir",
    None,
    "TFDS manual directory, for building a dataset from local files "
    "(e.g. the four MNIST .gz files).",
)
# Everyday knobs: each flag sets the config field whose last part is its name.
FLAG_FIELDS = (
    "model.pooling",
    "model.receptive_field",
    "model.width",
    "model.head",
    "model.extractor",
    "model.dtype_policy",
    "dataset",
    "train_size",
    "positive_fraction",
    "epochs",
    "batch_size",
    "seed",
    "strategy",
    "backprop",
    "init_from",
)
flags.DEFINE_enum("pooling", None, sorted(POOLINGS), "model.pooling: global pooling.")
flags.DEFINE_integer(
    "receptive_field", None, f"model.receptive_field: BagNet's, {sorted(THREE_BY_THREE_BLOCKS)}."
)
flags.DEFINE_float("width", None, "model.width: capacity s (> 0).")
flags.DEFINE_enum("head", None, sorted(HEADS), "model.head: embedding or instance pooling.")
flags.DEFINE_enum("extractor", None, sorted(BACKBONES), "model.extractor.")
flags.DEFINE_enum("dtype_policy", None, PRECISIONS, "model.dtype_policy: Keras dtype policy.")
flags.DEFINE_string("dataset", None, "dataset: TFDS name/config, e.g. nmnist/canvas_256.")
flags.DEFINE_integer("train_size", None, "train_size: distinct training images; 0 = all.")
flags.DEFINE_float("positive_fraction", None, "positive_fraction: of the training set.")
flags.DEFINE_integer("epochs", None, "epochs: training epochs.")
flags.DEFINE_integer("batch_size", None, "batch_size: global batch of one step.")
flags.DEFINE_integer("seed", None, "seed: of initialization and data order.")
flags.DEFINE_enum("strategy", None, sorted(distribute.STRATEGIES), "strategy: tf.distribute.")
flags.DEFINE_enum("backprop", None, BACKPROP, "backprop: sparse needs batch normalization.")
flags.DEFINE_string("init_from", None, "init_from: a run whose best weights start this one.")


def config_argv(argv: list[str]) -> list[str]:
    """argv with --config=NAME[:PRESET] as the installed file and --preset folded into it.

    `--preset=P` becomes the config argument's `:P`, the one way a preset is applied
    (by the family's get_config), before any --config.FIELD override.
    """
    argv = _joined(argv, ("config", "preset"))
    preset, index, value = None, None, None
    for i, arg in enumerate(argv):
        if arg.startswith(("--preset=", "-preset=")):
            preset = arg.split("=", 1)[1]
        elif arg.startswith(("--config=", "-config=")):
            index, value = i, arg.split("=", 1)[1]
    if value is None:
        value = configs.DEFAULT
    name, _, own_preset = value.partition(":")
    if preset and own_preset and preset != own_preset:
        raise ValueError(f"--preset={preset!r} and --config={value!r}: give one preset.")
    if not name.endswith(".py"):  # a family by name
        path = str(configs.config_path(name))
        if preset or own_preset:
            configs.check_preset(name, preset or own_preset)
        name = path
    value = name + (f":{preset or own_preset}" if preset or own_preset else "")
    if index is None:
        argv.insert(1, f"--config={value}")
    else:
        argv[index] = f"--config={value}"
    return argv


def _joined(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """argv with `--NAME VALUE` written as `--NAME=VALUE` for each of `names`."""
    spelled = {f"{dashes}{name}" for name in names for dashes in ("-", "--")}
    joined: list[str] = []
    for arg in argv:
        if joined and joined[-1] in spelled:
            joined[-1] = f"{joined[-1]}={arg}"
        else:
            joined.append(arg)
    return joined


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flags parser for this entry point: packaged config names, presets, then FLAGS."""
    try:
        argv = config_argv(argv)
    except ValueError as error:  # as absl reports a bad flag
        sys.exit(f"FATAL Flags parsing error: {error}\nPass --helpshort or --helpfull for help.")
    _CONFIG_ARGV[:] = argv
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as error:  # an override of a field the config lacks
        overrides = [arg.split("=", 1)[0] for arg in argv if arg.startswith("--config.")]
        field = str(error).strip("\"'")
        sys.exit(
            f"FATAL Flags parsing error: {', '.join(overrides)}: the config has no field "
            f"{field!r}. --config.FIELD sets fields the config has; new keys (pooling "
            "arguments, say) go in a config file, --config=FILE.py."
        )


def resolved_config() -> ml_collections.ConfigDict:
    """The config (with its preset and --config.FIELD overrides), then the plain flags."""
    config = _CONFIG.value
    with config.unlocked():
        for path in FLAG_FIELDS:
            value = flags.FLAGS[path.rsplit(".", 1)[-1]].value
            if value is not None:
                configs.set_field(config, path, value)
    return config


class ConfigError(ValueError):
    """A config value or flag that cannot be used; the message names it."""


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the flag (or config field) at fault and what it accepts."""
    model = config.model
    checks = [
        (model.pooling in POOLINGS, "--pooling", model.pooling, f"one of {sorted(POOLINGS)}"),
        (model.head in HEADS, "--head", model.head, f"one of {sorted(HEADS)}"),
        (
            model.dtype_policy in PRECISIONS,
            "--dtype_policy",
            model.dtype_policy,
            f"one of {PRECISIONS}",
        ),
        (model.width > 0, "--width", model.width, "a positive capacity s"),
        (
            config.strategy in distribute.STRATEGIES,
            "--strategy",
            config.strategy,
            f"one of {sorted(distribute.STRATEGIES)}",
        ),
        (
            config.optimizer in OPTIMIZERS,
            "--config.optimizer",
            config.optimizer,
            f"one of {sorted(OPTIMIZERS)}",
        ),
        (config.epochs >= 1, "--epochs", config.epochs, "at least 1"),
        (
            config.get("backprop", "dense") in BACKPROP,
            "--backprop",
            config.get("backprop"),
            f"one of {BACKPROP}",
        ),
        (
            config.get("sparse_top_k", 0) >= 0,
            "--config.sparse_top_k",
            config.get("sparse_top_k"),
            "0 (every cell the gradient reaches) or a count of cells per image",
        ),
        (
            config.get("precise_bn_images", 0) >= 0,
            "--config.precise_bn_images",
            config.get("precise_bn_images"),
            "0 (moving averages) or a number of training images",
        ),
        (
            config.get("best_metric", "accuracy") in ("accuracy", "auc")
            or (config.get("best_metric") == "pixel_loss" and bool(model.get("pixel_head", ""))),
            "--config.best_metric",
            config.get("best_metric"),
            "'accuracy' or 'auc' (the validation metric whose best epoch is kept), or "
            "'pixel_loss' with a pixel head",
        ),
        (config.batch_size >= 1, "--batch_size", config.batch_size, "at least 1"),
        (config.train_size >= 0, "--train_size", config.train_size, "0 (whole split) or more"),
        (
            0.0 <= config.positive_fraction <= 1.0,
            "--positive_fraction",
            config.positive_fraction,
            "a fraction in [0, 1]",
        ),
        (
            config.train_size > 0 or config.positive_fraction == 0.5,
            "--positive_fraction",
            config.positive_fraction,
            "0.5 unless --train_size is set: it is the share of positives in that subset",
        ),
        (config.learning_rate > 0, "--config.learning_rate", config.learning_rate, "> 0"),
        (
            config.get("lr_schedule", "step") in schedules.LR_SCHEDULES,
            "--config.lr_schedule",
            config.get("lr_schedule"),
            f"one of {sorted(schedules.LR_SCHEDULES)}",
        ),
        (
            0 <= config.get("warmup_epochs", 0.0) < config.epochs,
            "--config.warmup_epochs",
            config.get("warmup_epochs"),
            f"at least 0 and fewer than --epochs={config.epochs}",
        ),
        (
            config.batch_size >= 1 and config.effective_batch_size % config.batch_size == 0,
            "--config.effective_batch_size",
            config.effective_batch_size,
            f"a multiple of --batch_size={config.batch_size}",
        ),
        (
            config.checkpoint_every_steps >= 0,
            "--config.checkpoint_every_steps",
            config.checkpoint_every_steps,
            "0 (per epoch only) or more",
        ),
    ]
    if model.get("pixel_head", ""):
        checks.append(
            (
                config.get("backprop", "dense") == "dense",
                "--backprop",
                config.get("backprop"),
                "'dense' with a pixel head (its loss reaches every position)",
            )
        )
    if is_dense(config):
        checks += [
            (
                config.loss in DENSE_LOSSES,
                "--config.loss",
                config.loss,
                f"one of {sorted(DENSE_LOSSES)}",
            ),
            (
                0.0 < config.annotation_fraction <= 1.0,
                "--config.annotation_fraction",
                config.annotation_fraction,
                "a fraction in (0, 1] of each training canvas's needles",
            ),
            (
                config.get("backprop", "dense") == "dense",
                "--backprop",
                config.get("backprop"),
                "'dense' with a dense loss (it reaches every cell)",
            ),
        ]
    if model.extractor == "bagnet":
        checks.append(
            (
                model.receptive_field in THREE_BY_THREE_BLOCKS,
                "--receptive_field",
                model.receptive_field,
                f"one of {sorted(THREE_BY_THREE_BLOCKS)}",
            )
        )
    for ok, name, value, expected in checks:
        if not ok:
            raise ConfigError(f"{name}={value!r}: expected {expected}.")


def is_dense(config: ml_collections.ConfigDict) -> bool:
    """Whether the run trains per-cell targets (the sparse_shot family) instead of images."""
    return "loss" in config


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """Optimizer with the rate of `config.lr_schedule` and gradient accumulation."""
    kwargs: dict[str, Any] = {"learning_rate": schedules.learning_rate(config, steps_per_epoch)}
    accumulation = config.effective_batch_size // config.batch_size
    if accumulation > 1:
        kwargs["gradient_accumulation_steps"] = accumulation
    if config.weight_decay:
        kwargs["weight_decay"] = config.weight_decay
    optimizer = OPTIMIZERS[config.optimizer](**kwargs)
    if resolve_dtype_policy(config.model.dtype_policy) == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def check_resumable(config: ml_collections.ConfigDict, model_dir: pathlib.Path) -> None:
    """A run in `model_dir` (its config.json) must have `config`, bar RESUMABLE_CHANGES."""
    path = model_dir / "config.json"
    current = json.loads(config.to_json_best_effort())
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    resumable = set(RESUMABLE_CHANGES)
    if current.get("lr_schedule") == "cosine":
        resumable.discard("epochs")  # the cosine's length: more epochs would bend the rest
    changed = sorted(
        key
        for key in set(saved) | set(current)
        if key not in resumable and saved.get(key) != current.get(key)
    )
    if changed:
        raise ConfigError(
            f"--model_dir={model_dir} holds a run with a different config (fields {changed} "
            f"differ from {path}). Use a new --model_dir, or the same settings to resume."
        )


def write_config(config: ml_collections.ConfigDict, model_dir: pathlib.Path) -> None:
    """config.json, written as training starts: a start that fails earlier leaves none."""
    path = model_dir / "config.json"
    text = json.dumps(json.loads(config.to_json_best_effort()), indent=2)
    if not path.exists() or path.read_text() != text:
        atomic_write_text(path, text)


def default_model_dir(config: ml_collections.ConfigDict) -> pathlib.Path:
    model = config.model
    name = f"{config.dataset.replace('/', '_')}-{model.extractor}-{model.head}-{model.pooling}"
    return pathlib.Path("runs") / name


def compile_for_training(inference: keras.Model, config, steps_per_epoch: int) -> keras.Model:
    """A single-output view (logits) of the inference model, compiled; weights are shared.

    With `backprop="sparse"`, a SparseBackprop view: the same logits, whose gradient
    flows only through the grid cells the pooled value depends on.
    """
    classes = config.model.num_classes
    if is_dense(config):
        return _dense_training(inference, config, steps_per_epoch)
    if config.model.get("pixel_head", ""):
        training = _pixelcam_training(inference, config)
    elif config.get("backprop", "dense") == "sparse":
        training = SparseBackprop(
            inference,
            config.get("sparse_top_k", 0),
            config.get("sparse_tile_size", 1024),
            name="training",
        )
    else:
        training = keras.Model(inference.input, inference.output["logits"], name="training")
    training.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
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


def _dense_training(inference: keras.Model, config, steps_per_epoch: int) -> DenseTraining:
    """The dense view: every cell's logit against the annotated needles, with config.loss."""
    training = DenseTraining(inference, config.prior_probability, name="training")
    loss = DENSE_LOSSES[config.loss](config)
    if isinstance(loss, ExclusiveCrossEntropy):
        loss.epoch = training.loss_epoch
    training.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=loss,
        metrics=[keras.metrics.AUC(from_logits=True, name="auc")],
    )
    return training


def _pixelcam_training(inference: keras.Model, config) -> PixelCAMTraining:
    """The PixelCAM view: the teacher of `config.pixelcam` gives the pixel seeds."""
    pixelcam = config.pixelcam
    recipe = SeedRecipe(
        pixelcam.foreground_pixels,
        pixelcam.background_pixels,
        pixelcam.background_fraction,
        pixelcam.negative_background,
    )
    teacher = load_teacher(pixelcam.teacher)
    return PixelCAMTraining(
        inference,
        teacher,
        pixelcam.teacher_saliency,
        recipe,
        pixelcam.weight,
        config.seed,
        name="training",
    )


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

    The chief holds `model_dir`'s lock (needles_tf.training.run_lock) throughout: a second run
    there stops at once with a ConfigError naming the holder."""
    validate_config(config)
    try:
        model_dir = writable_directory(model_dir)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    strategy = distribute.make_strategy(config.strategy)
    chief = distribute.is_chief(strategy)
    distribute.replica_batch_size(strategy, config.batch_size)
    try:
        with run_lock(model_dir) if chief else contextlib.nullcontext():
            return _train_locked(
                config,
                model_dir,
                strategy,
                chief,
                tfds_data_dir=tfds_data_dir,
                tfds_manual_dir=tfds_manual_dir,
                extra_callbacks=extra_callbacks,
                verbose=verbose,
            )
    except RunLockedError as error:
        raise ConfigError(str(error)) from error


def _train_locked(
    config: ml_collections.ConfigDict,
    model_dir: pathlib.Path,
    strategy: tf.distribute.Strategy,
    chief: bool,
    *,
    tfds_data_dir: str | None,
    tfds_manual_dir: str | None,
    extra_callbacks: tuple[keras.callbacks.Callback, ...],
    verbose: int | str,
) -> dict[str, Any]:
    keras.utils.set_random_seed(config.seed)  # tf.data's seeded shuffles depend on it too
    data = _datasets(config, tfds_data_dir, tfds_manual_dir)

    metrics_path = model_dir / "metrics.json"
    # Decided before training, so that every worker takes the same branch below.
    evaluated = (
        metrics_path.exists()
        and json.loads(metrics_path.read_text()).get("epochs") == config.epochs
    )
    if chief:
        check_resumable(config, model_dir)

    keras.utils.set_random_seed(config.seed)  # again: loading data may draw from `random`
    with strategy.scope():
        try:  # e.g. a pooling the head cannot use, sparse backprop of non-local cells
            inference = build_model(config.model)
            _check_images_cover_the_field(data.validation, inference, config.dataset)
            training = compile_for_training(inference, config, data.steps_per_epoch)
        except ValueError as error:
            raise ConfigError(str(error)) from error
    distribute.build_for_fit(training, data.train_from(0), strategy)

    manager = CheckpointManager(model_dir / "checkpoints")
    state = new_run_state()
    try:
        restored = manager.restore_latest(training)
    except RuntimeError as error:
        raise ConfigError(f"--model_dir={model_dir}: {error}") from error
    if restored is not None:
        checkpoint, state = restored
        rate = schedules.learning_rate(config, data.steps_per_epoch)
        if not callable(rate):  # a constant rate is an optimizer variable: the checkpoint's
            training.optimizer.learning_rate = rate  # --config.learning_rate may have changed
        print(
            f"Resuming from {checkpoint}: {state['epoch']} epochs and "
            f"{state['global_step']} steps done.",
            flush=True,
        )
    elif config.get("init_from"):
        _initialize_from(inference, pathlib.Path(config.init_from))
    elif isinstance(training, PixelCAMTraining):  # the paper's start: the teacher's weights
        try:
            initialize_from_teacher(inference, training.teacher, "--config.pixelcam.teacher")
        except ValueError as error:
            raise ConfigError(str(error)) from error
    if chief:
        write_config(config, model_dir)
    run_state = None
    if state["epoch"] < config.epochs:
        run_state = RunState(
            state,
            manager,
            model_dir,
            inference,
            data.steps_per_epoch,
            config.checkpoint_every_steps,
            is_chief=chief,
            # "accuracy" (Pawlowski et al. 2019) or "auc", the mean over classes
            # (Yao et al. 2018, §4.2).
            monitor=f"val_{config.get('best_metric', 'accuracy')}",
        )
        callbacks = [
            run_state,
            keras.callbacks.TensorBoard(log_dir=str(model_dir / "tensorboard")),
            *extra_callbacks,
        ]
        if isinstance(training, DenseTraining):
            callbacks.insert(0, LossEpoch())
        if config.get("precise_bn_images", 0) and batch_norm_layers(inference):
            at_start = state["global_step"] == 0
            dense = config.get("backprop", "dense") == "dense"
            callbacks.insert(0, PreciseBatchNorm(inference, data.statistics, at_start, dense))
        if chief and config.overlay_images:
            callbacks.insert(1, _saliency_overlays(config, inference, model_dir, tfds_data_dir))
        if verbose == "auto":
            verbose = 1 if sys.stdout.isatty() else 2  # progress bars on a terminal only
        _fit(training, data, state, config.epochs, callbacks, verbose)

    if evaluated:
        return json.loads(metrics_path.read_text())
    if run_state is None:
        inference.load_weights(model_dir / state["best_weights"])
    else:
        inference.load_weights(run_state.best_weights_path())
        run_state.remove_private_files()
    test_metrics = training.evaluate(data.test, return_dict=True, verbose=0)
    best_row = state["history"][state["best_epoch"] - 1]
    metrics = {
        "best_epoch": state["best_epoch"],
        "epochs": state["epoch"],
        "validation": {k[4:]: v for k, v in best_row.items() if k.startswith("val_")},
        "test": {k: float(v) for k, v in test_metrics.items()},
    }
    if chief:  # the export first: metrics.json marks a run as complete
        if config.get("export", True):
            export.export_model(inference, config, model_dir, class_names=data.class_names)
        text = json.dumps(strict_json_metrics(metrics), indent=2, allow_nan=False)
        atomic_write_text(metrics_path, text)
    return metrics


def _initialize_from(inference: keras.Model, run: pathlib.Path) -> None:
    """Loads `run`'s best weights into `inference` (a fully convolutional model: any canvas)."""
    try:
        weights = runs.best_weights(run, "--init_from")
        inference.load_weights(weights)
    except FileNotFoundError as error:
        raise ConfigError(str(error)) from error
    except ValueError as error:  # another architecture
        raise ConfigError(
            f"--init_from={run}: its weights do not fit this model ({error})"
        ) from error
    print(f"Starting from {weights}", flush=True)


def train_curriculum(
    config: ml_collections.ConfigDict, model_dir: str | pathlib.Path, **kwargs
) -> dict[str, Any]:
    """Each stage of `config.curriculum` ("DATASET:EPOCHS") as its own resumable run in
    `model_dir/stageN-DATASET`, started from the previous stage's best weights (the first
    from `config.init_from`, if set); returns the last stage's metrics."""
    previous, metrics = config.get("init_from", ""), {}
    for index, stage in enumerate(config.curriculum):
        dataset, _, epochs = str(stage).rpartition(":")
        if not dataset or not epochs.isdigit() or int(epochs) < 1:
            raise ConfigError(f"--config.curriculum: {stage!r} is not DATASET:EPOCHS.")
        stage_config = ml_collections.ConfigDict(config.to_dict())
        stage_config.update(dataset=dataset, epochs=int(epochs), init_from=previous)
        stage_config.curriculum = ()
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


def _datasets(config, data_dir: str | None, manual_dir: str | None) -> pipeline.Splits:
    """The run's three splits (building the dataset first if needed)."""
    try:
        builder = pipeline.ensure_built(config.dataset, data_dir, manual_dir)
    except ValueError as error:  # an unknown dataset name
        raise ConfigError(str(error)) from error
    classes = pipeline.class_count(builder)
    if is_dense(config):
        return _dense_datasets(config, builder, data_dir)
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
        augmentation=config.augmentation.to_dict() if config.get("augmentation") else None,
    )
    _, steps_per_epoch = stream()

    def train_from(step: int) -> tf.data.Dataset:
        return stream()[0].skip(step)

    validation, test = (
        pipeline.evaluation_batches(config.dataset, split, config.batch_size, data_dir, classes)
        for split in ("validation", "test")
    )
    statistics = pipeline.first_images(
        config.dataset, config.get("precise_bn_images", 0), config.batch_size, data_dir, classes
    )
    return pipeline.Splits(
        train_from,
        validation,
        test,
        steps_per_epoch,
        pipeline.class_names(builder),
        statistics,
    )


def _dense_datasets(config, builder, data_dir: str | None) -> pipeline.Splits:
    """Training crops with the annotated fraction's targets; whole canvases, every needle
    a target, for validation and test."""
    geometry = (
        get_backbone_class(config.model.extractor)
        .from_model_config(config.model, "float32")
        .geometry
    )
    name, radius = config.dataset, config.target_radius
    try:
        stream = functools.partial(
            dense.training_stream,
            name,
            config.annotation_fraction,
            geometry,
            radius,
            config.crop_size,
            config.batch_size,
            config.seed,
            data_dir,
        )
        _, steps_per_epoch = stream()
        validation, test = (
            dense.evaluation_batches(name, split, geometry, radius, config.batch_size, data_dir)
            for split in ("validation", "test")
        )
    except ValueError as error:
        raise ConfigError(str(error)) from error
    statistics = pipeline.first_images(
        name, config.get("precise_bn_images", 0), config.batch_size, data_dir, 1
    )
    return pipeline.Splits(
        lambda step: stream()[0].skip(step),
        validation,
        test,
        steps_per_epoch,
        pipeline.class_names(builder),
        statistics,
    )


def _saliency_overlays(config, inference, model_dir: pathlib.Path, data_dir: str | None):
    images, boxes, labels = targets.first_examples(
        config.dataset, "validation", config.overlay_images, config.model.num_classes, data_dir
    )
    return SaliencyOverlays(inference, images, boxes, labels, model_dir / "tensorboard")


def _fit(training, data: pipeline.Splits, state, epochs: int, callbacks, verbose) -> None:
    """model.fit from the saved position: the rest of a broken epoch first, then whole epochs."""
    common = dict(validation_data=data.validation, callbacks=callbacks, verbose=verbose)
    done_in_epoch = state["global_step"] - state["epoch"] * data.steps_per_epoch
    if done_in_epoch >= data.steps_per_epoch:  # only checkpoints of versions before 0.2
        raise ConfigError(
            f"The newest checkpoint ends epoch {state['epoch'] + 1} without its validation; "
            "delete it to resume from the one before."
        )
    if done_in_epoch:
        training.fit(
            data.train_from(state["global_step"]),
            steps_per_epoch=data.steps_per_epoch - done_in_epoch,
            initial_epoch=state["epoch"],
            epochs=state["epoch"] + 1,
            shuffle=False,
            **common,
        )
    if state["epoch"] < epochs:
        training.fit(
            data.train_from(state["global_step"]),
            steps_per_epoch=data.steps_per_epoch,
            initial_epoch=state["epoch"],
            epochs=epochs,
            shuffle=False,
            **common,
        )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TFDS logs each split it opens at INFO
    try:
        config = resolved_config()
    except ValueError as error:  # e.g. an unknown --preset
        raise app.UsageError(str(error)) from error
    model_dir = pathlib.Path(_MODEL_DIR.value or default_model_dir(config))
    print(f"Model directory: {model_dir}", flush=True)
    try:
        run = train_curriculum if config.get("curriculum") else train
        metrics = run(
            config,
            model_dir,
            tfds_data_dir=_TFDS_DATA_DIR.value,
            tfds_manual_dir=_TFDS_MANUAL_DIR.value,
        )
    except ConfigError as error:
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
    app.run(one_line_usage_errors(main), flags_parser=parse_flags)
