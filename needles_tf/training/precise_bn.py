"""Precise batch normalization: population statistics re-estimated from training images.

Keras keeps batch-normalization statistics as moving averages (momentum 0.99):
after a few dozen steps they still describe the initial weights, and a short
run validates on garbage; sparse backpropagation never updates them at all (its
steps run the backbone in inference mode). "Precise BN" (Wu and Johnson 2021,
"Rethinking 'Batch' in BatchNorm", §3) instead runs a few hundred training
images through the model in training mode with the current weights and sets
each layer's statistics to the average of the batch statistics. The callback
compiles that pass with TensorFlow (the trainer's backend).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import keras
import numpy as np


def batch_norm_layers(model: keras.layers.Layer) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer inside `model`, nested models included."""
    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        else:
            found.extend(batch_norm_layers(layer))
    return found


@contextlib.contextmanager
def zero_momentum(layers: list[keras.layers.BatchNormalization]) -> Iterator[None]:
    """Momentum 0 inside: a training-mode call sets the moving values to the batch's."""
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        yield
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


def reestimate_statistics(model: keras.Model, batches: Iterable, forward=None) -> int:
    """Sets the moving statistics of `model`'s batch normalizations to the mean of their
    batch statistics over `batches` (of images); returns how many batches were used.

    Each batch runs through `model` in training mode with momentum 0, after which each
    layer's moving values are that batch's statistics; their means are assigned at the
    end. `forward` (images -> anything), e.g. a compiled `model(images, training=True)`
    traced while the momenta are 0, keeps large images from running eagerly, which
    holds every layer's output at once.
    """
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    forward = forward or (lambda images: model(images, training=True))
    means = [np.zeros(layer.moving_mean.shape, np.float64) for layer in layers]
    variances = [np.zeros(layer.moving_variance.shape, np.float64) for layer in layers]
    used = 0
    with zero_momentum(layers):
        for images in batches:
            forward(images)
            used += 1
            for i, layer in enumerate(layers):
                means[i] += np.asarray(layer.moving_mean)
                variances[i] += np.asarray(layer.moving_variance)
    if used:
        for layer, mean, variance in zip(layers, means, variances, strict=True):
            layer.moving_mean.assign((mean / used).astype("float32"))
            layer.moving_variance.assign((variance / used).astype("float32"))
    return used


def compiled_forward(model: keras.Model):
    """`model(images, training=True)` as one TensorFlow graph, traced with momenta 0."""
    import tensorflow as tf

    layers = batch_norm_layers(model)

    @tf.function(reduce_retracing=True)
    def forward(images):
        with zero_momentum(layers):  # read at trace time: baked into the graph
            model(images, training=True)

    return forward


class PreciseBatchNorm(keras.callbacks.Callback):
    """Re-estimates `model`'s batch-normalization statistics before training when `at_start`
    (a run's first step, not a resumed one) and, when `before_validation`, before each
    validation: both happen at the same points of every run, so a resumed run matches an
    uninterrupted one.

    Sparse steps (`needles_tf.training.modes.sparse_backprop`) train on the statistics
    themselves, so they take `before_validation=False`: their weights learn to work with the
    statistics set at the start, and statistics re-estimated after an epoch describe a
    network that was never trained (a canvas_256 run fell to 0.50 validation accuracy, loss
    3.2, after one epoch).
    """

    def __init__(
        self, model: keras.Model, batches: Iterable, at_start: bool, before_validation: bool = True
    ):
        super().__init__()
        self.target, self.batches, self.at_start = model, batches, at_start
        self.before_validation = before_validation
        self.forward = compiled_forward(model)

    def on_train_begin(self, logs=None):
        if self.at_start:
            reestimate_statistics(self.target, self.batches, self.forward)

    def on_test_begin(self, logs=None):
        if self.before_validation:
            reestimate_statistics(self.target, self.batches, self.forward)
