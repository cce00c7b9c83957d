"""The gradient of a scalar function of the input, for whichever Keras backend runs."""

from __future__ import annotations

from collections.abc import Callable

import keras


def input_gradient(loss: Callable, x):
    """d sum(loss(x)) / dx, as a backend tensor of x's shape."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(loss(x))
        return tape.gradient(total, x)
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        return jax.grad(lambda value: jnp.sum(loss(value)))(x)
    if backend == "torch":
        import torch

        x = torch.as_tensor(x).detach().requires_grad_(True)
        loss(x).sum().backward()
        return x.grad
    raise NotImplementedError(f"Input gradients are not implemented for the {backend} backend.")
