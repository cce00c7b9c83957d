"""Each private Keras/TensorFlow internal we rely on, and the upstream behaviour that makes us.

These tests check upstream behaviour, not ours: the day one fails, Keras or
TensorFlow has changed, and the workaround it names can go (or must change).
setup.cfg bounds the versions to those the suite passed with.
"""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as keras_trainer

from needles_tf.training import distribute


def test_keras_trains_on_the_first_batch_under_a_strategy():
    """What exact resume relies on: no batch is lost to Keras's lazy build.

    Under a tf.distribute strategy, `fit` builds the model from one batch of the
    epoch's iterator; Keras 3.15 resets the iterator afterwards (earlier releases
    did not, and that batch was never trained on). If this fails, resumed runs are
    off by a batch unless `distribute.build_for_fit` runs first. That workaround is
    still needed under MultiWorkerMirroredStrategy, where the lazy build fails:
    tests/test_distribute.py checks that upstream behaviour with two workers.
    """
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = keras.Sequential(
            [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
        )
        model.compile(keras.optimizers.SGD(1.0), "mse")
    # MSE at w = 0 has gradient -2y: batch 1 (y = 1) makes w = 2, batch 2 (y = -1) w = -2.
    stream = tf.data.Dataset.from_tensor_slices(([[1.0], [1.0]], [[1.0], [-1.0]])).batch(1)
    model.fit(stream.repeat(), steps_per_epoch=1, epochs=1, verbose=0)
    assert float(model.layers[0].kernel.numpy()[0, 0]) == pytest.approx(2.0)


class _MultiWorkerStandIn(tf.distribute.MultiWorkerMirroredStrategy):
    """Looks like a multi-worker strategy to Keras; records the axis of each reduce."""

    def __init__(self):  # no cluster: nothing of the real strategy is set up
        self.axes = []

    @property
    def extended(self):
        return type("Extended", (), {"_in_multi_worker_mode": staticmethod(lambda: True)})()

    def reduce(self, reduction, value, axis):
        self.axes.append(axis)
        return value


def test_keras_reduces_multi_worker_scalars_along_axis_0():
    """Workaround: `distribute._reduce_scalars_across_workers` (trainer.reduce_per_replica).

    Upstream, Keras averages every step result under MultiWorkerMirroredStrategy with
    `strategy.reduce("MEAN", v, axis=0)`, which fails on scalars such as the loss
    (tensorflow/tensorflow#72388). If either assertion fails, the patch can go.
    """
    upstream = getattr(keras_trainer.reduce_per_replica, "upstream", None)
    upstream = upstream or keras_trainer.reduce_per_replica
    strategy = _MultiWorkerStandIn()
    upstream({"loss": tf.constant(0.5)}, strategy, "auto")
    assert strategy.axes == [0]
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        tf.distribute.get_strategy().reduce("MEAN", tf.constant(0.5), axis=0)
    # Ours reduces scalars over no axis and leaves the rest to Keras.
    distribute._reduce_scalars_across_workers()
    strategy = _MultiWorkerStandIn()
    keras_trainer.reduce_per_replica({"loss": tf.constant(0.5)}, strategy, "auto")
    assert strategy.axes == [None]


@pytest.mark.parametrize("once", [False, True])
def test_keras_export_archives_store_each_variable_twice(tmp_path, once):
    """Why serving.save_variables_once exists: Keras 3.15's ExportArchive saves the tracked
    model's variables and the variables its endpoints capture, the same values twice. If
    the first case fails, Keras stores them once and the workaround can go."""
    from needles_tf.serving import save_variables_once

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1000)])
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve", lambda x: model(x), input_signature=[tf.TensorSpec([None, 4], tf.float32)]
    )
    if once:
        save_variables_once(archive)
    archive.write_out(str(tmp_path), verbose=False)
    reader = tf.train.load_checkpoint(str(tmp_path / "variables" / "variables"))
    stored = sum(
        tf.TensorShape(shape).num_elements()
        for name, shape in reader.get_variable_to_shape_map().items()
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH"
    )
    assert stored == (1 if once else 2) * model.count_params()
    loaded = tf.saved_model.load(str(tmp_path))
    x = tf.ones((2, 4))
    assert float(tf.reduce_max(tf.abs(loaded.serve(x) - model(x)))) < 1e-6
