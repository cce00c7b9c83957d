"""The trainer end to end on dummy nMNIST: train, crash, resume, finish, export, reload."""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
import time

import h5py
import keras
import numpy as np
import pytest
from conftest import free_ports

from needles_tf import train as train_module
from needles_tf.configs import nmnist
from needles_tf.training.callbacks import (
    DIVERGED_WEIGHT,
    NonFiniteLossError,
    RunState,
    new_run_state,
)
from needles_tf.training.checkpointing import CheckpointManager
from needles_tf.training.precise_bn import batch_norm_layers
from needles_tf.training.run_lock import LOCK_FILE

pytestmark = pytest.mark.slow  # trains, or runs workers in subprocesses

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 3  # 12 dummy training images, batch 4


def tiny_config(**fields):
    config = nmnist.get_config()
    config.model.update(
        width=0.0625,
        receptive_field=9,
        dtype_policy="float32",
        head="instance",
        pooling="lse_lba",
        pooling_kwargs={"r0": 5.0},
    )
    config.update(
        epochs=2,
        batch_size=4,
        effective_batch_size=4,
        optimizer="sgd",
        learning_rate=1e-2,
        lr_decay_epochs=(1,),
        checkpoint_every_steps=1,
        overlay_images=2,
    )
    config.update(fields)
    return config


class Crash(keras.callbacks.Callback):
    """Raises KeyboardInterrupt after `after_steps` training steps of this run."""

    def __init__(self, after_steps: int):
        super().__init__()
        self.remaining = after_steps

    def on_train_batch_end(self, batch, logs=None):
        self.remaining -= 1
        if self.remaining == 0:
            raise KeyboardInterrupt


class CountSteps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


def checkpoint_weights(path: pathlib.Path) -> list[np.ndarray]:
    arrays = []
    with h5py.File(path / "model.weights.h5", "r") as file:
        file.visititems(
            lambda name, item: (
                arrays.append(np.array(item)) if isinstance(item, h5py.Dataset) else None
            )
        )
    return arrays


def assert_same_checkpoint_weights(run: pathlib.Path, reference: pathlib.Path, name: str):
    """Checkpoint `name` of two runs holds the same weights (float32 round-off aside)."""
    for a, b in zip(
        checkpoint_weights(run / "checkpoints" / name),
        checkpoint_weights(reference / "checkpoints" / name),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def tfds_dir(nmnist_64) -> str:
    return str(pathlib.Path(nmnist_64.data_dir).parents[2])


@pytest.fixture(scope="module")
def uninterrupted(tfds_dir, tmp_path_factory):
    """The reference run, trained once per test session: pytest-xdist workers share one
    training (under a lock, in the session's common temporary folder) and each gets its
    own copy of the finished run."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-run"
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "metrics.json").exists():
            train_module.train(tiny_config(), shared, tfds_data_dir=tfds_dir, verbose=0)
    model_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    shutil.copytree(shared, model_dir)
    (model_dir / LOCK_FILE).unlink(missing_ok=True)
    return model_dir, json.loads((model_dir / "metrics.json").read_text())


def test_a_run_writes_its_records_and_export(uninterrupted):
    model_dir, metrics = uninterrupted
    assert sorted(p.name for p in (model_dir / "checkpoints").iterdir()) == ["ckpt-5", "ckpt-6"]
    history = (model_dir / "history.csv").read_text().splitlines()
    assert history[0].split(",")[:2] == ["epoch", "accuracy"] and len(history) == 3
    assert "val_accuracy" in history[0] and "learning_rate" in history[0]
    learning_rates = [float(row.split(",")[-1]) for row in history[1:]]
    np.testing.assert_allclose(learning_rates, [1e-2, 1e-3], rtol=1e-6)  # x0.1 at epoch 1
    assert json.loads((model_dir / "metrics.json").read_text()) == metrics
    assert set(metrics) == {"best_epoch", "epochs", "validation", "test"}
    assert set(metrics["test"]) == {"accuracy", "auc", "loss"}
    assert (model_dir / f"best-epoch{metrics['best_epoch']:04d}.weights.h5").exists()
    assert (model_dir / "saved_model" / "1" / "saved_model.pb").exists()
    assert list((model_dir / "tensorboard").glob("saliency/events.out.tfevents.*"))
    assert not list(model_dir.rglob(".tmp-*"))


def test_crash_then_rerun_resumes_to_the_same_weights(uninterrupted, tfds_dir, tmp_path):
    reference_dir, reference_metrics = uninterrupted
    config = tiny_config()
    with pytest.raises(KeyboardInterrupt):  # in epoch 2, after its first step
        train_module.train(
            config, tmp_path, tfds_data_dir=tfds_dir, extra_callbacks=(Crash(4),), verbose=0
        )
    assert CheckpointManager(tmp_path / "checkpoints").latest().name == "ckpt-4"
    assert not (tmp_path / "metrics.json").exists()
    assert not (tmp_path / "saved_model").exists()

    steps = CountSteps()
    metrics = train_module.train(
        config, tmp_path, tfds_data_dir=tfds_dir, extra_callbacks=(steps,), verbose=0
    )
    assert steps.steps == 2 * STEPS_PER_EPOCH - 4
    assert_same_checkpoint_weights(tmp_path, reference_dir, "ckpt-6")
    assert metrics["best_epoch"] == reference_metrics["best_epoch"]

    # A finished run rerun: nothing trains, nothing is rewritten.
    def stamps():  # of the run's records (the lock file names each run that holds it)
        return {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.name != LOCK_FILE}

    before = stamps()
    steps = CountSteps()
    again = train_module.train(
        config, tmp_path, tfds_data_dir=tfds_dir, extra_callbacks=(steps,), verbose=0
    )
    assert again == metrics and steps.steps == 0
    assert before == stamps()


class CrashInValidation(keras.callbacks.Callback):
    """Raises KeyboardInterrupt in the first validation batch (a kill -9 lands there too)."""

    def on_test_batch_end(self, batch, logs=None):
        raise KeyboardInterrupt


def test_a_kill_during_validation_resumes_to_the_same_weights(uninterrupted, tfds_dir, tmp_path):
    """Checkpoints every step, killed while epoch 1 validates: the resumed run redoes the
    epoch's last step and validation (it used to resume into an epoch of 0 steps, forever),
    then trains epoch 2 on the uninterrupted run's batches (a second fit() call used to
    reshuffle them)."""
    reference_dir, _ = uninterrupted
    config = tiny_config(export=False)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(
            config, tmp_path, tfds_data_dir=tfds_dir, extra_callbacks=(CrashInValidation(),)
        )
    assert CheckpointManager(tmp_path / "checkpoints").latest().name == "ckpt-2"
    steps = CountSteps()
    train_module.train(
        config, tmp_path, tfds_data_dir=tfds_dir, extra_callbacks=(steps,), verbose=0
    )
    assert steps.steps == 2 * STEPS_PER_EPOCH - 2
    assert_same_checkpoint_weights(tmp_path, reference_dir, "ckpt-6")
    # --config.export=False: a finished run of weights and records, no export
    assert (tmp_path / "metrics.json").exists()
    assert not (tmp_path / "saved_model").exists() and not (tmp_path / "model.keras").exists()


class LearningRateAtStart(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def test_a_failed_start_leaves_no_config_and_a_lower_rate_resumes(tfds_dir, tmp_path):
    """config.json appears only as training starts, so a corrected command just runs; the
    NaN advice (a tenth of the rate) resumes, at that rate."""
    broken = tiny_config(overlay_images=0)
    broken.model.update(head="embedding", pooling="noisy_or")  # the head refuses it
    with pytest.raises(train_module.ConfigError, match="needs values in"):
        train_module.train(broken, tmp_path, tfds_data_dir=tfds_dir, verbose=0)
    assert not (tmp_path / "config.json").exists()
    config = tiny_config(
        overlay_images=0, lr_decay_epochs=(), checkpoint_every_steps=0, export=False
    )
    with pytest.raises(KeyboardInterrupt):
        train_module.train(
            config, tmp_path, tfds_data_dir=tfds_dir, extra_callbacks=(Crash(4),), verbose=0
        )
    start = LearningRateAtStart()
    config.learning_rate /= 10
    train_module.train(config, tmp_path, tfds_data_dir=tfds_dir, extra_callbacks=(start,))
    assert start.rate == pytest.approx(config.learning_rate)


def test_rerun_with_another_config_is_refused(uninterrupted, tfds_dir):
    model_dir, _ = uninterrupted
    with pytest.raises(train_module.ConfigError, match=r"different config.*'optimizer'"):
        train_module.train(
            tiny_config(optimizer="adam"), model_dir, tfds_data_dir=tfds_dir, verbose=0
        )


def test_export_loads_without_needles_tf(uninterrupted):
    model_dir, _ = uninterrupted
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import tensorflow as tf

        loaded = tf.saved_model.load(sys.argv[1])
        image = np.random.default_rng(0).integers(0, 256, (2, 80, 72, 1)).astype(np.uint8)
        out = loaded.signatures["serving_default"](image=tf.constant(image))
        png = tf.io.encode_png(image[0])
        encoded = loaded.signatures["serving_encoded"](image_bytes=tf.stack([png, png]))
        assert "needles_tf" not in sys.modules
        np.testing.assert_allclose(encoded["probability"][0], out["probability"][0], rtol=1e-5)
        print({k: list(v.shape) for k, v in out.items()})
        print(float(tf.reduce_min(out["saliency"])), float(tf.reduce_max(out["saliency"])))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(model_dir / "saved_model" / "1")],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    shapes, limits = result.stdout.strip().splitlines()[-2:]
    # 80x72 input, RF 9, stride 8: a 9x8 grid; saliency at the input's size, in [0, 1].
    assert eval(shapes) == {
        "probability": [2, 1],
        "saliency": [2, 80, 72, 1],
        "saliency_grid": [2, 9, 8, 1],
    }
    low, high = map(float, limits.split())
    assert 0.0 <= low <= high <= 1.0


def test_saved_model_cli_runs_the_export(uninterrupted, tmp_path):
    model_dir, _ = uninterrupted
    np.save(tmp_path / "image.npy", np.zeros((1, 64, 64, 1), np.uint8))
    cli = pathlib.Path(sys.executable).with_name("saved_model_cli")
    result = subprocess.run(
        [
            str(cli),
            "run",
            "--dir",
            str(model_dir / "saved_model" / "1"),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"image={tmp_path / 'image.npy'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for output in ("probability", "saliency", "saliency_grid"):
        assert f"Result for output key {output}:" in result.stdout


def test_keras_file_loads_in_safe_mode_and_matches(uninterrupted):
    model_dir, metrics = uninterrupted
    loaded = keras.saving.load_model(model_dir / "model.keras", safe_mode=True)
    reference = train_module.build_model(tiny_config().model)
    reference.load_weights(model_dir / f"best-epoch{metrics['best_epoch']:04d}.weights.h5")
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 1)).astype(np.uint8)
    np.testing.assert_allclose(
        loaded.predict_on_batch(images)["probability"],
        reference.predict_on_batch(images)["probability"],
        rtol=1e-5,
    )


def test_keras_file_loads_in_a_fresh_process_after_import_needles_tf(uninterrupted):
    """README's load: `import needles_tf` registers every layer (it used to fail with
    "Could not locate class 'ImagePreprocessing'")."""
    model_dir, _ = uninterrupted
    script = (
        "import sys, keras, numpy as np, needles_tf\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "print(model.predict_on_batch(np.zeros((1, 64, 64, 1), np.uint8))['probability'].shape)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(model_dir / "model.keras")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "(1, 1)"


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    state = new_run_state()
    callback = RunState(state, CheckpointManager(tmp_path), tmp_path, None, STEPS_PER_EPOCH)
    callback.on_train_batch_end(0, {"loss": 0.7})
    with pytest.raises(NonFiniteLossError, match=r"became nan at epoch 1, step 2.*intact"):
        callback.on_train_batch_end(1, {"loss": float("nan")})
    assert state["global_step"] == 1


@pytest.mark.parametrize(
    ("monitor", "values", "best_epoch"),
    [("val_accuracy", [0.5, 0.7, 0.6], 2), ("val_pixel_loss", [0.5, 0.3, 0.4], 2)],
)
def test_the_best_epoch_is_the_highest_score_or_the_lowest_loss(
    tmp_path, monitor, values, best_epoch
):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    state = new_run_state()
    callback = RunState(state, CheckpointManager(tmp_path), tmp_path, model, 1, monitor=monitor)
    model.compile(optimizer="sgd", loss="mse")
    callback.set_model(model)
    for epoch, value in enumerate(values):
        callback.on_epoch_begin(epoch)
        callback.on_epoch_end(epoch, {monitor: value})
    assert state["best_epoch"] == best_epoch and state["best"] == pytest.approx(values[1])
    assert [p.name for p in tmp_path.glob("best-*")] == [f"best-epoch{best_epoch:04d}.weights.h5"]


def test_weights_that_overflowed_or_diverged_are_never_checkpointed(tmp_path):
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.BatchNormalization(), keras.layers.Dense(1)]
    )
    manager = CheckpointManager(tmp_path)
    callback = RunState(new_run_state(), manager, tmp_path, model, 100, every_steps=1)
    callback.set_model(model)
    callback.on_train_batch_end(0, {"loss": 0.7})
    assert [p.name for p in manager.checkpoints()] == ["ckpt-1"]
    norm, dense = model.layers
    for step, weight, reached in [(1, np.inf, "inf"), (2, np.nan, "nan"), (3, 1e30, "1e[+]30")]:
        dense.kernel.assign([[weight], [1.0]])
        with pytest.raises(NonFiniteLossError, match=rf"reached {reached} by .*diverged.*intact"):
            callback.on_train_batch_end(step, {"loss": 0.6})  # a finite loss
        assert [p.name for p in manager.checkpoints()] == ["ckpt-1"]
    dense.kernel.assign([[-DIVERGED_WEIGHT], [1.0]])  # the largest that is kept
    norm.moving_variance.assign([1e12, 1.0])  # a statistic: only required to be finite
    callback.on_train_batch_end(4, {"loss": 0.6})
    assert [p.name for p in manager.checkpoints()] == ["ckpt-1", "ckpt-5"]
    norm.moving_variance.assign([np.inf, 1.0])
    with pytest.raises(NonFiniteLossError, match=r"reached inf by"):
        callback.on_train_batch_end(5, {"loss": 0.6})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model.width": -1.0}, r"--width=-1.0: expected a positive"),
        ({"model.pooling": "median"}, r"--pooling='median': expected one of \[.*'lse_lba'"),
        ({"model.dtype_policy": "int8"}, r"--dtype_policy='int8': expected one of"),
        ({"optimizer": "lbfgs"}, r"--config.optimizer='lbfgs'"),
        (
            {"effective_batch_size": 6},
            r"effective_batch_size=6: expected a multiple of --batch_size=4",
        ),
        ({"positive_fraction": 1.5}, r"--positive_fraction=1.5"),
        ({"positive_fraction": 0.3}, r"--positive_fraction=0.3: expected 0.5 unless --train_size"),
        ({"batch_size": 0}, r"--batch_size=0: expected at least 1"),
        ({"model.receptive_field": 17}, r"--receptive_field=17: expected one of"),
        ({"best_metric": "loss"}, r"--config.best_metric=.loss.: expected .accuracy. or .auc."),
        ({"best_metric": "pixel_loss"}, r"best_metric='pixel_loss': .* 'pixel_loss' with a pixel"),
        ({"lr_schedule": "linear"}, r"--config.lr_schedule='linear': expected one of \['cosine'"),
        ({"warmup_epochs": 2.0}, r"--config.warmup_epochs=2.0: expected .* fewer than --epochs=2"),
    ],
)
def test_bad_config_values_name_the_flag(fields, message):
    config = tiny_config()
    for path, value in fields.items():
        train_module.configs.set_field(config, path, value)
    with pytest.raises(train_module.ConfigError, match=message):
        train_module.validate_config(config)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "needles_tf.train", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def test_command_line_rejects_bad_flags_at_once(tmp_path):
    result = run_cli("--pooling=median", f"--model_dir={tmp_path}")
    assert result.returncode != 0
    assert "--pooling=median" in result.stderr and "lse_lba" in result.stderr
    result = run_cli("--width=-2", "--preset=cpu_quick", f"--model_dir={tmp_path}")
    assert result.returncode != 0 and "--width=-2.0: expected a positive" in result.stderr
    # A family by name, with a preset from the family it builds on.
    result = run_cli(
        "--config=ncamelyon",
        "--preset=cpu_quick",
        "--width=-2",
        f"--model_dir={tmp_path}",
    )
    assert result.returncode != 0 and "--width=-2.0: expected a positive" in result.stderr
    result = run_cli("--preset=gpu_huge", f"--model_dir={tmp_path}")
    assert result.returncode != 0 and "--preset='gpu_huge': expected one of" in result.stderr
    assert not any(tmp_path.iterdir())
    result = run_cli("--config.model.pooling_kwargs.r0=5", f"--model_dir={tmp_path}")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "--config.model.pooling_kwargs.r0: the config has no field 'r0'" in last, last
    # One line, not absl's docstring and 500 lines of flag help.
    result = run_cli("--dataset=nonexistent", f"--model_dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: --dataset='nonexistent': no such TFDS dataset"), last
    assert "Train a needles_tf model" not in result.stderr + result.stdout


def test_preset_then_config_overrides_then_flags():
    from absl import flags

    preset = nmnist.PRESETS["cpu_quick"]
    argv = [
        "train",
        "--config=nmnist",
        "--preset=cpu_quick",
        "--config.learning_rate=0.01",
        "--config.model.width=0.5",
        "--width=0.125",
        "--pooling=max",
        "--head=embedding",
    ]
    flags.FLAGS.unparse_flags()
    train_module.parse_flags(argv)
    try:
        config = train_module.resolved_config()
    finally:
        flags.FLAGS.unparse_flags()
    assert config.epochs == preset["epochs"] and config.optimizer == preset["optimizer"]
    assert config.learning_rate == 0.01  # --config.* beats the preset
    assert config.model.width == 0.125 and config.model.pooling == "max"  # plain flags last


def test_config_argument_names_a_family_and_folds_the_preset_into_it():
    path = str(train_module.configs.config_path("multires"))
    folded = train_module.config_argv(["train", "--config=multires", "--preset=cpu_quick"])
    assert folded == ["train", f"--config={path}:cpu_quick", "--preset=cpu_quick"]
    default = train_module.config_argv(["train", "--preset=cpu_quick", "--epochs=1"])
    assert default[1] == f"--config={train_module.configs.config_path('nmnist')}:cpu_quick"
    spaced = train_module.config_argv(["train", "--config", "multires", "--preset", "cpu_quick"])
    assert spaced == folded
    mine = train_module.config_argv(["train", "--config=/somewhere/mine.py:small"])
    assert mine == ["train", "--config=/somewhere/mine.py:small"]
    with pytest.raises(ValueError, match="give one preset"):
        train_module.config_argv(["train", "--config=nmnist:a", "--preset=b"])
    with pytest.raises(ValueError, match=r"--config='resnet': expected a .py file or one of"):
        train_module.config_argv(["train", "--config=resnet:cpu_quick"])


def test_multi_worker_run_survives_kill_9_of_every_worker(tfds_dir, tmp_path):
    """Two workers on localhost, killed with SIGKILL mid-run, rerun: they resume and finish."""
    model_dir = tmp_path / "run"
    workers = [f"localhost:{port}" for port in free_ports(2)]
    flags = [
        f"--model_dir={model_dir}",
        f"--tfds_data_dir={tfds_dir}",
        "--strategy=multi_worker",
        "--width=0.0625",
        "--receptive_field=9",
        "--dtype_policy=float32",
        "--head=instance",
        "--pooling=lse_lba",
        "--epochs=2",
        "--batch_size=4",
        "--config.effective_batch_size=4",
        "--config.checkpoint_every_steps=1",
        "--config.overlay_images=0",
    ]

    def start():
        processes = []
        for index in range(2):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"}
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "needles_tf.train", *flags],
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        return processes

    processes = start()
    deadline = time.monotonic() + 300
    while not (model_dir / "checkpoints" / "ckpt-2").exists():
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes), [
            p.communicate()[0][-2000:] for p in processes if p.poll() is not None
        ]
        time.sleep(0.05)
    for process in processes:
        process.kill()
        process.communicate()
    assert not (model_dir / "metrics.json").exists()

    rerun = start()
    outputs = [p.communicate(timeout=300)[0] for p in rerun]
    assert all(p.returncode == 0 for p in rerun), [out[-3000:] for out in outputs]
    assert "Resuming from" in outputs[0] and "Resuming from" in outputs[1]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    assert len((model_dir / "history.csv").read_text().splitlines()) == 1 + 2
    assert (model_dir / "saved_model" / "1" / "saved_model.pb").exists()


def test_evaluate_writes_metrics_table_and_pictures(uninterrupted, tfds_dir, capsys):
    from needles_tf import evaluate

    model_dir, run_metrics = uninterrupted
    methods = ["instance", "gradient", "sparse_inversion"]
    results = evaluate.evaluate(model_dir, "test", methods, batch_size=8, data_dir=tfds_dir)
    # The same weights on the same split: the trainer's test accuracy (logit >= 0).
    assert results["classification"]["accuracy"] == pytest.approx(run_metrics["test"]["accuracy"])
    assert results["examples"] == 16
    assert set(results["localization"]) == set(methods)
    for values in results["localization"].values():
        for name in ("localization_ap", "dice", "pointing_game", "pxap", "iobb_accuracy@tau=0.5"):
            assert 0.0 <= values[name] <= 1.0, name
    saved = json.loads((model_dir / "eval" / "metrics.json").read_text())
    assert saved["localization"].keys() == results["localization"].keys()
    for picture in ("precision_recall.png", "overlays.png"):
        assert (model_dir / "eval" / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "sparse_inversion" in table and "localization_ap" in table


def test_evaluate_without_boxes_says_why_it_skips(uninterrupted, tfds_dir, monkeypatch, capsys):
    from needles_tf import evaluate

    def without_boxes(*args, **kwargs):
        data = load(*args, **kwargs)
        return data.map(lambda e: {"image": e["image"], "label": e["label"]})

    load = evaluate.load
    monkeypatch.setattr(evaluate, "load", without_boxes)
    model_dir, _ = uninterrupted
    results = evaluate.evaluate(model_dir, "test", ["gradient"], batch_size=8, data_dir=tfds_dir)
    assert results["localization"] == "skipped: nmnist/canvas_64 has no needle_bbox feature"
    assert "localization skipped: nmnist/canvas_64 has no needle_bbox" in capsys.readouterr().out
    assert (model_dir / "eval" / "overlays.png").exists()


@pytest.mark.parametrize("where", ["file", "under_a_file", "unwritable"])
def test_a_model_dir_that_cannot_hold_a_run_is_named(tmp_path, where):
    (tmp_path / "a_file").write_text("")
    model_dir = {
        "file": tmp_path / "a_file",
        "under_a_file": tmp_path / "a_file" / "run",
        "unwritable": pathlib.Path("/sys/needles_tf_test_run"),  # refused even to root
    }[where]
    expected = "is a file; expected a directory" if where == "file" else "cannot write there"
    with pytest.raises(train_module.ConfigError, match=f"--model_dir={model_dir}: {expected}"):
        train_module.train(tiny_config(), model_dir)


def test_evaluate_and_export_name_a_bad_model_dir_or_split(uninterrupted, tfds_dir, tmp_path):
    from needles_tf import evaluate

    model_dir, _ = uninterrupted
    with pytest.raises(ValueError, match=r"--split='tset': expected one of \['test', 'train'"):
        evaluate.evaluate(model_dir, "tset", ["instance"], data_dir=tfds_dir)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match=r"--model_dir=.*a_file: is a file"):
        evaluate.evaluate(tmp_path / "a_file", "test", data_dir=tfds_dir)
    result = subprocess.run(
        [sys.executable, "-m", "needles_tf.export", f"--model_dir={model_dir}", "--version=-1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode != 0 and "--version=-1: expected a positive integer" in result.stderr


def test_resume_passes_over_a_truncated_checkpoint(uninterrupted, tfds_dir, tmp_path, caplog):
    """The newest checkpoint cut short (a full disk, a copy): resume from the one before,
    and still end with the uninterrupted run's weights."""
    reference_dir, _ = uninterrupted
    config = tiny_config(overlay_images=0, export=False)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(
            config, tmp_path, tfds_data_dir=tfds_dir, extra_callbacks=(Crash(4),), verbose=0
        )
    weights = tmp_path / "checkpoints" / "ckpt-4" / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:1000])
    steps = CountSteps()
    train_module.train(
        config, tmp_path, tfds_data_dir=tfds_dir, extra_callbacks=(steps,), verbose=0
    )
    assert "ckpt-4 cannot be restored" in caplog.text
    assert "earlier intact checkpoint" in caplog.text and "ckpt-3" in caplog.text
    assert steps.steps == 2 * STEPS_PER_EPOCH - 3
    assert_same_checkpoint_weights(tmp_path, reference_dir, "ckpt-6")


def batch_norm_config(**fields):
    config = tiny_config(overlay_images=0, optimizer="adam", learning_rate=3e-3, **fields)
    config.update(epochs=1, lr_decay_epochs=(), checkpoint_every_steps=0)
    config.model.update(normalization="batch", head="embedding", pooling="max")
    config.model.pooling_kwargs = {}
    return config


@pytest.mark.slow
def test_precise_batch_norm_keeps_short_runs_from_validating_on_garbage(tfds_dir, tmp_path):
    """Keras's moving averages (momentum 0.99) still describe the initial weights after a few
    steps; statistics re-estimated on training images describe the data."""
    losses = {}
    for images in (0, 12):
        config = batch_norm_config(precise_bn_images=images, export=False)
        train_module.train(config, tmp_path / str(images), tfds_data_dir=tfds_dir, verbose=0)
        history = (tmp_path / str(images) / "history.csv").read_text().splitlines()
        column = history[0].split(",").index("val_loss")
        losses[images] = [float(row.split(",")[column]) for row in history[1:]]
    assert max(losses[12]) < 10.0, losses  # a loss of a classifier, not of garbage
    assert min(losses[0]) > 5 * max(losses[12]), losses  # what it was without


class BatchNormStatistics(keras.callbacks.Callback):
    """Records the first batch-normalization mean at the first step and at validation."""

    at_first_step = at_validation = None

    def mean(self) -> np.ndarray:
        return np.array(batch_norm_layers(self.model)[0].moving_mean)

    def on_train_batch_begin(self, batch, logs=None):
        if self.at_first_step is None:
            self.at_first_step = self.mean()

    def on_test_begin(self, logs=None):
        self.at_validation = self.mean()


@pytest.mark.slow
def test_sparse_backprop_trains_under_fit_and_exports(tfds_dir, tmp_path):
    config = batch_norm_config(backprop="sparse", precise_bn_images=12)
    recorder = BatchNormStatistics()
    metrics = train_module.train(
        config, tmp_path / "run", tfds_data_dir=tfds_dir, verbose=0, extra_callbacks=(recorder,)
    )
    assert metrics["epochs"] == 1 and np.isfinite(metrics["test"]["loss"])
    # Sparse steps train on the statistics estimated at the start: validation keeps them.
    np.testing.assert_array_equal(recorder.at_validation, recorder.at_first_step)
    assert (tmp_path / "run" / "saved_model" / "1" / "saved_model.pb").exists()
    instance_norm = tiny_config(backprop="sparse")
    with pytest.raises(train_module.ConfigError, match="--backprop=sparse"):
        train_module.train(instance_norm, tmp_path / "refused", tfds_data_dir=tfds_dir)


class FirstWeights(keras.callbacks.Callback):
    """Records the first kernel of the model as training begins."""

    def on_train_begin(self, logs=None):
        self.kernel = np.asarray(self.model.weights[0])


@pytest.mark.slow
def test_a_curriculum_starts_each_stage_from_the_last_and_resumes(
    uninterrupted, tfds_dir, tmp_path
):
    """Stages of a curriculum are runs of their own: init_from chains them, reruns skip them."""
    from needles_tf.runs import load_run

    first_run, _ = uninterrupted
    start = FirstWeights()
    config = tiny_config(epochs=1, overlay_images=0, init_from=str(first_run), export=False)
    config.curriculum = ("nmnist/canvas_64:1", "nmnist/canvas_64:1")
    metrics = train_module.train_curriculum(
        config, tmp_path, tfds_data_dir=tfds_dir, verbose=0, extra_callbacks=(start,)
    )
    stages = sorted(p.name for p in tmp_path.iterdir())
    assert stages == ["stage0-nmnist_canvas_64", "stage1-nmnist_canvas_64"]
    second = json.loads((tmp_path / stages[1] / "config.json").read_text())
    assert second["init_from"] == str(tmp_path / stages[0]) and second["curriculum"] == []
    stage0_best, _ = load_run(tmp_path / stages[0])
    np.testing.assert_array_equal(start.kernel, np.asarray(stage0_best.weights[0]))
    assert metrics == json.loads((tmp_path / stages[1] / "metrics.json").read_text())
    again = train_module.train_curriculum(config, tmp_path, tfds_data_dir=tfds_dir, verbose=0)
    assert again == metrics  # finished stages are not trained again
    missing = tiny_config(init_from=str(tmp_path / "nothing"))
    with pytest.raises(train_module.ConfigError, match=r"--init_from=.*no best-epoch"):
        train_module.train(missing, tmp_path / "x", tfds_data_dir=tfds_dir)


def test_package_builds_a_named_model_from_a_run(uninterrupted, tfds_dir, tmp_path, monkeypatch):
    """A run becomes saved_models/NAME, usable by name in evaluate, predict and models.load,
    with a card rendered from its files."""
    from needles_tf import evaluate, model_card, models, package, packaged, predict

    model_dir, _ = uninterrupted
    recipe = packaged.PackagedModel(
        summary="A tiny test model.",
        train=("python -m needles_tf.train --preset=tiny",),
        run=str(model_dir),
        evaluations={
            "": packaged.Evaluation(saliency=("instance", "gradient")),
            "first_4": packaged.Evaluation(saliency=("instance",), max_examples=4, why="a few"),
            "other_canvas": packaged.Evaluation(
                saliency=("instance",), dataset="nmnist/canvas_64", why="another canvas"
            ),
        },
    )
    monkeypatch.setitem(packaged.PACKAGED_MODELS, "tiny", recipe)
    monkeypatch.setenv("NEEDLES_TF_SAVED_MODELS", str(tmp_path / "saved"))
    monkeypatch.setattr(package, "SPEED_SECONDS", 0.1)
    folder = package.package("tiny", data_dir=tfds_dir)

    assert folder == tmp_path / "saved" / "tiny"
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["tiny"]  # no temporary
    main = json.loads((folder / "metrics.json").read_text())
    assert main["examples"] == 16 and set(main["localization"]) == {"instance", "gradient"}
    low, high = main["classification"]["ci95"]["accuracy"]
    assert low <= main["classification"]["accuracy"] <= high
    assert (folder / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((folder / "evaluations/first_4/metrics.json").read_text())["examples"] == 4
    speed = json.loads((folder / "speed.json").read_text())
    assert speed["images_per_second"] > 0 and speed["image_size"] == [64, 64]
    card = (folder / "MODEL_CARD.md").read_text()
    assert card == model_card.render("tiny", folder, recipe)
    assert "python -m needles_tf.train --preset=tiny" in card and "`first_4`: a few." in card
    assert f"| accuracy | {main['classification']['accuracy']:.4f} |" in card
    assert "| nmnist/canvas_64 | 19.1% | 16 |" in card  # the other-canvas table

    # The name works wherever a model is expected.
    model = models.load("tiny")
    assert model.name == keras.saving.load_model(model_dir / "model.keras").name
    exported = predict.load_exported("tiny")
    assert exported.metadata["dataset"] == "nmnist/canvas_64"
    again = evaluate.evaluate(
        model="tiny", out_dir=tmp_path / "again", resamples=0, data_dir=tfds_dir
    )
    assert again["classification"]["accuracy"] == main["classification"]["accuracy"]
    assert "ci95" not in again["classification"]
    with pytest.raises(FileNotFoundError, match=r"--model=tinyy: no such file .* \(one of .*tiny"):
        packaged.resolve("tinyy")

    # Exported again (new signatures, same weights): the same answers.
    image = np.random.default_rng(0).uniform(0, 255, (64, 64, 1)).astype("float32")
    before = predict.predict_image(exported, image, 32)
    package.reexport(folder)
    after = predict.predict_image(predict.load_exported("tiny"), image, 32)
    np.testing.assert_allclose(after["probability"], before["probability"], atol=1e-6)
    np.testing.assert_allclose(after["saliency_grid"], before["saliency_grid"], atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["tiny"]
    with pytest.raises(ValueError, match=r"--model_dir .* or --model .*, one of the two"):
        evaluate.evaluate(model_dir, model="tiny", data_dir=tfds_dir)


def test_a_sweep_resumes_its_interrupted_point_and_then_skips_it(uninterrupted, tfds_dir, tmp_path):
    """A sweep of one point, left as a run killed after step 5 of 6 (the reference run
    without its last checkpoint, metrics and export): `python -m needles_tf.sweep`
    resumes it in its own process to the reference's weights, and a second call finds it
    finished and trains nothing."""
    from needles_tf import sweep

    reference_dir, _ = uninterrupted
    config = tmp_path / "tiny.py"
    config.write_text(
        "import json\nimport ml_collections\n\n\ndef get_config(preset=''):\n"
        f"    return ml_collections.ConfigDict(json.loads({tiny_config().to_json()!r}))\n"
    )
    sweep_file = tmp_path / "tiny_sweep.py"
    sweep_file.write_text(
        "import ml_collections\n\n\ndef get_config(scale):\n    return ml_collections.ConfigDict"
        f"({{'config': {str(config)!r}, 'fixed': (), 'axes': (('seed', (0,)),)}})\n"
    )
    workdir = tmp_path / "work"
    (point,) = sweep.expand(sweep.load_sweep(f"{sweep_file}:cpu"))
    run = workdir / point.name
    shutil.copytree(reference_dir, run)
    for done in ("metrics.json", "saved_model", "model.keras", "checkpoints/ckpt-6"):
        shutil.rmtree(run / done) if (run / done).is_dir() else (run / done).unlink()
    command = [sys.executable, "-m", "needles_tf.sweep", f"--sweep={sweep_file}:cpu",
               f"--workdir={workdir}", f"--tfds_data_dir={tfds_dir}"]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    first = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "0 of 1 points finished; 1 to run." in first.stdout
    assert re.search(rf"\[1/1\] {re.escape(point.name)}: done in \d+\.\d min", first.stdout)
    log = (workdir / f"{point.name}.log").read_text()
    assert f"Resuming from {run / 'checkpoints' / 'ckpt-5'}: 1 epochs and 5 steps done." in log
    assert (run / "metrics.json").exists()
    assert_same_checkpoint_weights(run, reference_dir, "ckpt-6")
    second = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    assert second.returncode == 0 and "1 of 1 points finished; 0 to run." in second.stdout


def test_images_smaller_than_the_receptive_field_are_refused_in_one_line(tfds_dir, tmp_path):
    config = tiny_config()
    config.model.receptive_field = 177  # the dummy canvases are 64 pixels wide
    with pytest.raises(train_module.ConfigError, match=r"64x64 images are smaller .* of 177"):
        train_module.train(config, tmp_path / "run", tfds_data_dir=tfds_dir)
