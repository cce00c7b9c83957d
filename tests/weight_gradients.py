"""Gradients of small extractors, saved for comparison between two processes.

Run as a subprocess by test_onednn.py, once with oneDNN on and once with
TF_ENABLE_ONEDNN_OPTS=0 (the variable is read when TensorFlow loads):
    python tests/weight_gradients.py --out=GRADIENTS.npz

Two kinds of record:
- `layer/CASE/LAYER/...`: every layer of the extractor alone, on seeded random
  inputs and upstream gradients of its real shapes (identical in both
  processes): output, input gradients and weight gradients. This checks each
  kernel at the shapes the model uses, with nothing to amplify round-off.
- `model/CASE/VARIABLE`: the weight gradients of one training step of the whole
  model, for the cases where that is well conditioned. At random
  initialization the deep RF 177 network is not: with Eigen alone, an input
  changed by 1e-7 (relative) moves its gradients by 16% (measured), so it is
  checked layer by layer only. Nor are batch-normalized BagNets on a batch of
  two: the same 1e-7 moves RF 9's by 0.37% and RF 33's by 0.22% (instance
  normalization: 0.05%), and on an AVX2-only AMD EPYC oneDNN's and Eigen's
  round-off, amplified so, left their whole-model gradients 3-20% apart while
  every layer alone agreed to 1e-3; they too are checked layer by layer.
"""

from __future__ import annotations

import argparse

import numpy as np

# name -> (model config fields, input size, whole-model check): every extractor, both
# normalizations, sizes even at every stride (where oneDNN's strided 1x1 kernel went wrong).
CASES = {
    "bagnet_rf9_batch": (dict(receptive_field=9, normalization="batch"), 64, False),
    "bagnet_rf9_instance": (dict(receptive_field=9, normalization="instance"), 64, True),
    "bagnet_rf33_batch": (dict(receptive_field=33, normalization="batch"), 64, False),
    "bagnet_rf33_instance": (dict(receptive_field=33, normalization="instance"), 64, True),
    "bagnet_rf177_batch": (dict(receptive_field=177, normalization="batch"), 192, False),
    "bagnet_rf177_instance": (dict(receptive_field=177, normalization="instance"), 192, False),
    "multires_batch": (
        dict(extractor="multires", width=0.125, growth_rate=4, normalization="batch"),
        64,
        True,
    ),
    "multires_instance": (
        dict(extractor="multires", width=0.125, growth_rate=4, normalization="instance"),
        64,
        True,
    ),
}


def build(case: str):
    import keras
    from conftest import tiny_bagnet_config

    from needles_tf.models.factory import build_model

    fields, _, _ = CASES[case]
    keras.utils.set_random_seed(0)
    # Mean pooling: a smooth loss. Under max pooling a near-tie flips an argmax, and float32
    # round-off alone then moves a whole channel's gradient to another window.
    return build_model(tiny_bagnet_config(pooling="mean", **fields))


def model_gradients(case: str) -> dict[str, np.ndarray]:
    import tensorflow as tf

    model = build(case)
    size = CASES[case][1]
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (2, size, size, 1)), tf.float32)
    labels = tf.constant([[1.0], [0.0]])
    with tf.GradientTape() as tape:
        logits = model(images, training=True)["logits"]
        loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))
    grads = tape.gradient(loss, model.trainable_variables)
    return {
        f"model/{case}/{v.path}": g.numpy()
        for v, g in zip(model.trainable_variables, grads, strict=True)
    }


def layer_gradients(case: str) -> dict[str, np.ndarray]:
    import keras
    import tensorflow as tf

    from needles_tf.models.multires import UpsampleLike

    extractor = build(case).backbone
    size = CASES[case][1]
    shapes = keras.Model(extractor.input, [layer.output for layer in extractor.layers[1:]])
    outputs = shapes(tf.zeros((2, size, size, 1)))
    shape_of = {id(t): o.shape for t, o in zip(shapes.outputs, outputs, strict=True)}
    shape_of[id(extractor.input)] = (2, size, size, 1)
    rng = np.random.default_rng(1)
    results = {}
    for layer in extractor.layers[1:]:
        inputs = keras.tree.flatten(layer.input)
        # Offset means: normalization layers must cope with |mean| > deviation.
        values = [tf.constant(rng.normal(1.0, 1.0, shape_of[id(t)]), tf.float32) for t in inputs]
        with tf.GradientTape() as tape:
            tape.watch(values)
            if isinstance(layer, UpsampleLike):
                y = layer(*values)
            else:
                y = layer(values if len(values) > 1 else values[0], training=True)
            upstream = tf.constant(rng.normal(size=y.shape), tf.float32)
            loss = tf.reduce_sum(y * upstream)
        weights = layer.trainable_variables
        grads = tape.gradient(loss, values + weights)
        prefix = f"layer/{case}/{layer.name}"
        results[f"{prefix}/output"] = y.numpy()
        for i, g in enumerate(grads[: len(values)]):
            if g is not None:  # None: an input read for its shape only (UpsampleLike)
                results[f"{prefix}/d_input{i}"] = g.numpy()
        for v, g in zip(weights, grads[len(values) :], strict=True):
            results[f"{prefix}/d_{v.name}"] = g.numpy()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    results = {}
    for case, (_, _, whole_model) in CASES.items():
        results.update(layer_gradients(case))
        if whole_model:
            results.update(model_gradients(case))
    np.savez(args.out, **results)


if __name__ == "__main__":
    main()
