"""Choosing the tf.distribute strategy: `--strategy=auto|one_device|mirrored|multi_worker`.

`auto` takes MultiWorkerMirroredStrategy when TF_CONFIG names several
workers, MirroredStrategy over all local GPUs when there are several, and one
device (the GPU, or the CPU; TensorFlow's default strategy) otherwise. The
global batch is split evenly across replicas; Keras aggregates losses and
metrics across them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import tensorflow as tf

from needles_tf.registry import Registry

STRATEGIES: Registry[Callable[[], tf.distribute.Strategy]] = Registry("--strategy")


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


@STRATEGIES.register("one_device")
def one_device() -> tf.distribute.Strategy:
    """TensorFlow's default strategy: the GPU if there is one, else the CPU.

    Not `OneDeviceStrategy`: under it Keras 3 routes every step through the
    distributed path, which measured 4x slower on a 2-core CPU (23 against 97
    images/s for the s = 1/4 BagNet at 64x64).
    """
    return tf.distribute.get_strategy()


@STRATEGIES.register("mirrored")
def mirrored() -> tf.distribute.Strategy:
    """All local GPUs; without GPUs, all logical CPU devices."""
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])


@STRATEGIES.register("multi_worker")
def multi_worker() -> tf.distribute.Strategy:
    _reduce_scalars_across_workers()
    return tf.distribute.MultiWorkerMirroredStrategy()


def _reduce_scalars_across_workers() -> None:
    """Lets Keras 3's fit() average scalar step results under MultiWorkerMirroredStrategy.

    Keras reduces them with `strategy.reduce("MEAN", v, axis=0)`, which fails
    on scalars ("Invalid reduction dimension 0 for input with 0 dimensions",
    tensorflow/tensorflow#72388). Scalars are reduced with axis=None here;
    everything else goes to Keras's own function.
    """
    from keras.src.backend.tensorflow import trainer

    keras_reduce = trainer.reduce_per_replica
    if getattr(keras_reduce, "handles_scalars", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or reduction not in (
            "auto",
            "mean",
        ):
            return keras_reduce(values, strategy, reduction)

        def reduce(value):
            if value.shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return keras_reduce(value, strategy, reduction)

        return tf.nest.map_structure(reduce, values)

    reduce_per_replica.handles_scalars = True
    reduce_per_replica.upstream = keras_reduce  # tests check that it still needs this
    trainer.reduce_per_replica = reduce_per_replica


@STRATEGIES.register("auto")
def auto() -> tf.distribute.Strategy:
    if cluster_workers() > 1:
        return multi_worker()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return mirrored()
    return one_device()


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy registered as `name`; a ValueError names --strategy and the choices."""
    return STRATEGIES.get_or_raise(name)()


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


def replicated(function: Callable, strategy: tf.distribute.Strategy) -> Callable:
    """`function` of a batch, run with the batch split across the strategy's replicas
    (one part per GPU) and the results concatenated in order. A batch that does not
    split evenly is padded with copies of its last element, whose results are dropped.
    With one replica, `function` itself."""
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return function

    @tf.function
    def run(parts):
        return strategy.run(function, args=(parts,))

    def call(batch):
        batch = tf.convert_to_tensor(batch)
        count = int(batch.shape[0])
        padding = -count % replicas
        if padding:
            batch = tf.concat([batch, tf.repeat(batch[-1:], padding, axis=0)], axis=0)
        chunks = tf.split(batch, replicas)
        parts = strategy.experimental_distribute_values_from_function(
            lambda context: chunks[context.replica_id_in_sync_group]
        )
        outputs = run(parts)
        return tf.nest.map_structure(
            lambda value: tf.concat(strategy.experimental_local_results(value), axis=0)[:count],
            outputs,
        )

    return call


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes files: the chief, or worker 0 of a cluster without one."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def build_for_fit(model, dataset: tf.data.Dataset, strategy: tf.distribute.Strategy) -> None:
    """Builds a compiled model's state from the dataset's element spec, before `fit`.

    Under a strategy, Keras 3 builds lazily at the start of each `fit`/`evaluate`
    from the first batch of the epoch's iterator; under MultiWorkerMirroredStrategy
    that fails on the per-replica batch ("Attempt to convert a value (PerReplica ...)",
    keras-team/keras#20585). Building symbolically from the spec needs no data; the
    lazy build is then switched off. Private Keras API: tests/test_distribute.py checks
    that the lazy build still fails, and setup.cfg bounds Keras's version.
    """
    import keras

    def symbolic(spec):
        return keras.KerasTensor(spec.shape, spec.dtype.name)

    data_batch = tf.nest.map_structure(symbolic, dataset.element_spec)
    with strategy.scope():
        model._symbolic_build(data_batch=data_batch)
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
