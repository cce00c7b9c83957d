"""Precise batch normalization: population statistics re-estimated from training images.

Keras keeps batch-normalization statistics as moving averages (momentum 0.99):
after a few dozen steps they still describe the initial weights, and a short
run validates on garbage; sparse backpropagation never updates them at all (its
steps run the backbone in inference mode). "Precise BN" (Wu and Johnson 2021,
"Rethinking 'Batch' in BatchNorm", §3) instead runs a few hundred training
images through the model in training mode with the current weights and sets
each layer's statistics to the average of the batch statistics.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras


def batch_norm_layers(model: keras.layers.Layer) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer inside `model`, nested models included."""
    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        else:
            found.extend(batch_norm_layers(layer))
    return found


def reestimate_statistics(model: keras.Model, batches: Iterable) -> int:
    """Sets the moving statistics of `model`'s batch normalizations to the mean of their
    batch statistics over `batches` (of images); returns how many batches were used.

    Each batch runs in training mode with momentum (t - 1) / t at batch t, so the
    moving value after T batches is the plain average of the T batch values.
    """
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    used = 0
    try:
        for used, images in enumerate(batches, 1):
            for layer in layers:
                layer.momentum = (used - 1) / used
            model(images, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return used


class PreciseBatchNorm(keras.callbacks.Callback):
    """Re-estimates `model`'s batch-normalization statistics before each validation, and
    before training when `at_start` (a run's first step, not a resumed one: both happen at
    the same points of every run, so a resumed run matches an uninterrupted one)."""

    def __init__(self, model: keras.Model, batches: Iterable, at_start: bool):
        super().__init__()
        self.target, self.batches, self.at_start = model, batches, at_start

    def on_train_begin(self, logs=None):
        if self.at_start:
            reestimate_statistics(self.target, self.batches)

    def on_test_begin(self, logs=None):
        reestimate_statistics(self.target, self.batches)
