"""Choosing the tf.distribute strategy: `--strategy=auto|one_device|mirrored|multi_worker`.

`auto` takes MultiWorkerMirroredStrategy when TF_CONFIG names several
workers, MirroredStrategy over all local GPUs when there are several, and one
device (the GPU, or the CPU) otherwise. The global batch is split evenly
across replicas; Keras aggregates losses and metrics across them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import tensorflow as tf

STRATEGIES: dict[str, Callable[[], tf.distribute.Strategy]] = {}


def register_strategy(name: str):
    def register(factory):
        STRATEGIES[name] = factory
        return factory

    return register


def cluster_workers() -> int:
    """Number of workers TF_CONFIG names (1 when it is unset); a clear error when malformed."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 1
    try:
        cluster = json.loads(raw)["cluster"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(
            'TF_CONFIG: expected JSON like {"cluster": {"worker": ["host:port", ...]}, '
            f'"task": {{"type": "worker", "index": 0}}}}, got {raw!r}.'
        ) from error
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


@register_strategy("one_device")
def one_device() -> tf.distribute.Strategy:
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


@register_strategy("mirrored")
def mirrored() -> tf.distribute.Strategy:
    """All local GPUs; without GPUs, all logical CPU devices."""
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])


@register_strategy("multi_worker")
def multi_worker() -> tf.distribute.Strategy:
    return tf.distribute.MultiWorkerMirroredStrategy()


@register_strategy("auto")
def auto() -> tf.distribute.Strategy:
    if cluster_workers() > 1:
        return multi_worker()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return mirrored()
    return one_device()


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy registered as `name`; a ValueError names --strategy and the choices."""
    if name not in STRATEGIES:
        raise ValueError(f"--strategy={name!r}: expected one of {sorted(STRATEGIES)}.")
    return STRATEGIES[name]()


def replica_batch_size(strategy: tf.distribute.Strategy, global_batch_size: int) -> int:
    """Per-replica batch; the global batch must split evenly across replicas."""
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"--batch_size={global_batch_size}: expected a multiple of the "
            f"{replicas} replicas of the {type(strategy).__name__}."
        )
    return global_batch_size // replicas


def split_logical_cpus(count: int) -> None:
    """Splits the CPU into `count` logical devices (tests and demos of MirroredStrategy).

    Must run before TensorFlow initializes its devices.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )
