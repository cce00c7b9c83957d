"""RunProgress, the callback that keeps a run's state: NaN stops, the best epoch, no
checkpoint of diverged weights."""

from __future__ import annotations

import pathlib

import keras
import numpy as np
import pytest

from needles_tf.run_directory import RunDirectory, RunState
from needles_tf.training.callbacks import DIVERGED_WEIGHT, NonFiniteLossError, RunProgress
from needles_tf.training.checkpointing import CheckpointManager

ROOT = pathlib.Path(__file__).resolve().parents[1]


STEPS_PER_EPOCH = 3  # conftest.tiny_config: 12 dummy training images, batch 4


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    state = RunState()
    callback = RunProgress(
        state, CheckpointManager(tmp_path), RunDirectory(tmp_path), None, STEPS_PER_EPOCH
    )
    callback.on_train_batch_end(0, {"loss": 0.7})
    with pytest.raises(NonFiniteLossError, match=r"became nan at epoch 1, step 2.*intact"):
        callback.on_train_batch_end(1, {"loss": float("nan")})
    assert state.global_step == 1


@pytest.mark.parametrize(
    ("monitor", "values", "best_epoch"),
    [("val_accuracy", [0.5, 0.7, 0.6], 2), ("val_pixel_loss", [0.5, 0.3, 0.4], 2)],
)
def test_the_best_epoch_is_the_highest_score_or_the_lowest_loss(
    tmp_path, monitor, values, best_epoch
):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    state = RunState()
    run = RunDirectory(tmp_path)
    callback = RunProgress(state, CheckpointManager(tmp_path), run, model, 1, monitor=monitor)
    model.compile(optimizer="sgd", loss="mse")
    callback.set_model(model)
    for epoch, value in enumerate(values):
        callback.on_epoch_begin(epoch)
        callback.on_epoch_end(epoch, {monitor: value})
    assert state.best_epoch == best_epoch and state.best == pytest.approx(values[1])
    assert [p.name for p in tmp_path.glob("best-*")] == [f"best-epoch{best_epoch:04d}.weights.h5"]


def test_weights_that_overflowed_or_diverged_are_never_checkpointed(tmp_path):
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.BatchNormalization(), keras.layers.Dense(1)]
    )
    manager = CheckpointManager(tmp_path)
    callback = RunProgress(RunState(), manager, RunDirectory(tmp_path), model, 100, every_steps=1)
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
