r"""Does a dtype policy keep accuracy? Short nMNIST training per policy, same seed and data.

Trains needles_tf/configs/nmnist.py's model (RF 33, max pooling) on a fixed training
subset for a few epochs under each policy and reports validation accuracy,
ROC AUC and training images/s. Needs a built dataset, e.g.

    tfds build nmnist --imports=tfds_builders.nmnist --config=canvas_64 \
        --manual_dir=PATH_TO_MNIST
    python benchmarks/precision_accuracy.py --dtype_policy=float32,mixed_bfloat16
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from needles_tf.configs import nmnist
from needles_tf.data import load
from needles_tf.models.factory import build_model

_POLICIES = flags.DEFINE_list("dtype_policy", ["float32", "mixed_bfloat16"], "Policies.")
_DATASET = flags.DEFINE_string("dataset", "nmnist/canvas_64", "TFDS name/config.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory.")
_TRAIN_SIZE = flags.DEFINE_integer("train_size", 4000, "Training images (balanced).")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Training epochs.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_WIDTH = flags.DEFINE_float("width", 0.25, "Capacity s.")
_OPTIMIZER = flags.DEFINE_enum("optimizer", "adam", ["adam", "rmsprop"], "Optimizer.")
_LR = flags.DEFINE_float("learning_rate", 1e-3, "Learning rate.")


def batches(split: str, size: int | None, shuffle: bool) -> tf.data.Dataset:
    data = load(_DATASET.value, split, size=size, data_dir=_DATA_DIR.value)
    data = data.map(lambda ex: (ex["image"], {"logits": tf.cast(ex["label"], tf.float32)[None]}))
    data = data.cache()
    if shuffle:
        data = data.shuffle(size or 10_000, seed=0, reshuffle_each_iteration=True)
    return data.batch(_BATCH.value, drop_remainder=shuffle).prefetch(tf.data.AUTOTUNE)


def validation_metrics(model: keras.Model, data: tf.data.Dataset) -> tuple[float, float]:
    accuracy = keras.metrics.BinaryAccuracy(threshold=0.0)
    auc = keras.metrics.AUC(from_logits=True)
    for images, targets in data:
        logits = model.predict_on_batch(images)["logits"]
        accuracy.update_state(targets["logits"], logits)
        auc.update_state(targets["logits"], logits)
    return float(accuracy.result()), float(auc.result())


def main(argv):
    del argv
    train = batches("train", _TRAIN_SIZE.value, shuffle=True)
    validation = batches("validation", None, shuffle=False)
    print(f"{'policy':<16}{'val acc':>9}{'val AUC':>9}{'images/s':>10}")
    for policy in _POLICIES.value:
        keras.utils.set_random_seed(0)
        config = nmnist.get_config().model
        config.update({"width": _WIDTH.value, "dtype_policy": policy})
        model = build_model(config)
        model.compile(
            optimizer=keras.optimizers.get(
                {"class_name": _OPTIMIZER.value, "config": {"learning_rate": _LR.value}}
            ),
            loss={"logits": keras.losses.BinaryCrossentropy(from_logits=True)},
        )
        start = time.perf_counter()
        model.fit(train, epochs=_EPOCHS.value, verbose=2)
        seconds = time.perf_counter() - start
        accuracy, auc = validation_metrics(model, validation)
        images = _EPOCHS.value * (_TRAIN_SIZE.value // _BATCH.value) * _BATCH.value
        print(f"{policy:<16}{accuracy:>9.4f}{auc:>9.4f}{images / seconds:>10.1f}", flush=True)
        assert np.isfinite(accuracy)


if __name__ == "__main__":
    app.run(main)
