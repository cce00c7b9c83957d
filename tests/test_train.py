"""The trainer end to end on dummy nMNIST: train, crash, resume, finish, export, reload."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import assert_same_checkpoint_weights, free_ports, tiny_config

from needles_tf import train as train_module
from needles_tf.run_directory import RunDirectory
from needles_tf.run_lock import LOCK_FILE
from needles_tf.training.checkpointing import CheckpointManager
from needles_tf.training.precise_bn import batch_norm_layers

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 3  # 12 dummy training images, batch 4 (conftest.tiny_config)


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


# tfds_dir and uninterrupted (the reference run) are fixtures of conftest.py.


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_rerun_with_another_config_is_refused(uninterrupted, tfds_dir):
    model_dir, _ = uninterrupted
    with pytest.raises(train_module.ConfigError, match=r"different config.*'optimizer'"):
        train_module.train(
            tiny_config(optimizer="adam"), model_dir, tfds_data_dir=tfds_dir, verbose=0
        )


@pytest.mark.slow
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


@pytest.mark.slow
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
    config = batch_norm_config(mode="sparse_backprop", precise_bn_images=12)
    recorder = BatchNormStatistics()
    metrics = train_module.train(
        config, tmp_path / "run", tfds_data_dir=tfds_dir, verbose=0, extra_callbacks=(recorder,)
    )
    assert metrics["epochs"] == 1 and np.isfinite(metrics["test"]["loss"])
    # Sparse steps train on the statistics estimated at the start: validation keeps them.
    np.testing.assert_array_equal(recorder.at_validation, recorder.at_first_step)
    assert (tmp_path / "run" / "saved_model" / "1" / "saved_model.pb").exists()
    instance_norm = tiny_config(mode="sparse_backprop")
    with pytest.raises(train_module.ConfigError, match="--mode=sparse_backprop"):
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
    stage0_best, _ = RunDirectory(tmp_path / stages[0]).load_model()
    np.testing.assert_array_equal(start.kernel, np.asarray(stage0_best.weights[0]))
    assert metrics == json.loads((tmp_path / stages[1] / "metrics.json").read_text())
    again = train_module.train_curriculum(config, tmp_path, tfds_data_dir=tfds_dir, verbose=0)
    assert again == metrics  # finished stages are not trained again
    missing = tiny_config(init_from=str(tmp_path / "nothing"))
    with pytest.raises(train_module.ConfigError, match=r"--init_from=.*no best-epoch"):
        train_module.train(missing, tmp_path / "x", tfds_data_dir=tfds_dir)


def test_images_smaller_than_the_receptive_field_are_refused_in_one_line(tfds_dir, tmp_path):
    config = tiny_config()
    config.model.receptive_field = 177  # the dummy canvases are 64 pixels wide
    with pytest.raises(train_module.ConfigError, match=r"64x64 images are smaller .* of 177"):
        train_module.train(config, tmp_path / "run", tfds_data_dir=tfds_dir)
