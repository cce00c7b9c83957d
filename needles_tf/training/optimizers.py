"""OPTIMIZERS by name (`config.optimizer`) and the run's optimizer: its learning-rate
schedule, gradient accumulation, weight decay and loss scaling."""

from __future__ import annotations

from typing import Any

import keras
import ml_collections

from needles_tf.precision import resolve_dtype_policy
from needles_tf.registry import Registry
from needles_tf.training import schedules

OPTIMIZERS: Registry = Registry("--config.optimizer")
OPTIMIZERS.register("rmsprop")(keras.optimizers.RMSprop)
OPTIMIZERS.register("adam")(keras.optimizers.Adam)
OPTIMIZERS.register("adamw")(keras.optimizers.AdamW)


@OPTIMIZERS.register("sgd")
def sgd_with_momentum(**kwargs) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(momentum=0.9, **kwargs)


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """The optimizer of `config.optimizer` at the rate of `config.lr_schedule`, accumulating
    gradients up to `config.effective_batch_size` images."""
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
