"""Learning-rate schedules by name (`config.lr_schedule`), in optimizer steps (batches).

    step:   `learning_rate`, times `lr_decay_factor` after each of `lr_decay_epochs`
            (Pawlowski et al. 2019 §3).
    cosine: a linear warm-up from 0 over `warmup_epochs`, then a half cosine down to 0
            at the end of `epochs` (Loshchilov & Hutter, "SGDR", ICLR 2017, §3, without
            restarts; warm-up as in Goyal et al., "Accurate, Large Minibatch SGD", §2.2).

Both count batches, not updates, from 0, as Keras optimizers do under gradient
accumulation, so an epoch is `steps_per_epoch` steps either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import ml_collections

from needles_tf.registry import Registry

LR_SCHEDULES: Registry[Callable[[ml_collections.ConfigDict, int], Any]] = Registry(
    "--config.lr_schedule"
)


@LR_SCHEDULES.register("step")
def step_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> Any:
    # The rate changes after `epoch` epochs: PiecewiseConstantDecay keeps a value while
    # step <= boundary.
    boundaries = [int(epoch) * steps_per_epoch - 1 for epoch in config.lr_decay_epochs]
    if not boundaries:
        return config.learning_rate
    values = [config.learning_rate * config.lr_decay_factor**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


@LR_SCHEDULES.register("cosine")
def cosine_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> Any:
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(total - 1, round(config.warmup_epochs * steps_per_epoch))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else config.learning_rate,
        decay_steps=total - warmup,
        warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def learning_rate(config: ml_collections.ConfigDict, steps_per_epoch: int) -> Any:
    """The rate or schedule `config.lr_schedule` names (default: step)."""
    return LR_SCHEDULES.get_or_raise(config.lr_schedule)(config, steps_per_epoch)
