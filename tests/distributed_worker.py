"""Trains a tiny BagNet a few steps under a tf.distribute strategy; saves all replica weights.

Run as a subprocess by test_distribute.py (device setup must precede TF's):
    python tests/distributed_worker.py --strategy=mirrored --logical_cpus=2 --out=W.npz
"""

from __future__ import annotations

import argparse

import numpy as np

from needles_tf.training import distribute


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--logical_cpus", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--lazy_build", action="store_true")
    args = parser.parse_args()
    if args.logical_cpus > 1:
        distribute.split_logical_cpus(args.logical_cpus)

    import keras
    import tensorflow as tf
    from conftest import tiny_bagnet_config

    from needles_tf.models.factory import build_model

    strategy = distribute.make_strategy(args.strategy)
    global_batch = 8
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = build_model(tiny_bagnet_config())
        model.compile(
            optimizer=keras.optimizers.RMSprop(1e-3),
            loss={"logits": keras.losses.BinaryCrossentropy(from_logits=True)},
        )
    initial = [np.array(w) for w in model.get_weights()]
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (32, 24, 24, 1)).astype(np.uint8)
    labels = rng.integers(0, 2, (32, 1)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((images, {"logits": labels}))
    distribute.replica_batch_size(strategy, global_batch)  # the global batch splits evenly
    data = data.batch(global_batch, drop_remainder=True)
    if not args.lazy_build:  # --lazy_build: Keras's own build, to see if it still fails
        distribute.build_for_fit(model, data, strategy)
    model.fit(data, epochs=1, verbose=0)
    replicas = {}
    for i, variable in enumerate(model.weights):
        values = getattr(variable.value, "values", (variable.value,))
        for r, value in enumerate(values):
            replicas[f"replica{r}/{i}"] = value.numpy()
    np.savez(
        args.out,
        replicas=strategy.num_replicas_in_sync,
        **replicas,
        **{f"initial/{i}": w for i, w in enumerate(initial)},
    )


if __name__ == "__main__":
    main()
