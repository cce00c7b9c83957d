"""oneDNN corner cases: strided 1x1 convolutions, and every extractor's gradients vs. Eigen's."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from needles_tf.layers.pointwise import StridedPointwiseConv2D

GRADIENTS = pathlib.Path(__file__).with_name("weight_gradients.py")


@pytest.mark.parametrize(
    "channels, size, padding",
    [(1, 64, "valid"), (4, 64, "same"), (15, 33, "same"), (24, 31, "valid")],
)
def test_strided_pointwise_equals_a_strided_conv2d(channels, size, padding):
    """Values as Conv2D(strides=2); the weight gradient as the pixels a 1x1 kernel reads."""
    x = tf.constant(np.random.default_rng(1).normal(size=(2, size, size, channels)), tf.float32)
    layer = StridedPointwiseConv2D(8, 2, use_bias=True, bias_initializer="glorot_uniform")
    reference = keras.layers.Conv2D(8, 1, strides=2, padding=padding, use_bias=True)
    reference.build(x.shape)
    layer.build(x.shape)
    reference.set_weights(layer.get_weights())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.range(8, dtype=tf.float32))
    np.testing.assert_allclose(y, reference(x), rtol=1e-5, atol=1e-5)
    picked = x[:, ::2, ::2, :].numpy()  # what the kernel reads, by hand
    weights = np.broadcast_to(np.arange(8, dtype=np.float32), y.shape)
    kernel_gradient = np.einsum("bhwc,bhwf->cf", picked, weights)[None, None]
    np.testing.assert_allclose(tape.gradient(loss, layer.kernel), kernel_gradient, rtol=1e-4)
    input_gradient = np.zeros(x.shape, np.float32)
    input_gradient[:, ::2, ::2, :] = weights @ layer.kernel.numpy()[0, 0].T
    np.testing.assert_allclose(tape.gradient(loss, x), input_gradient, rtol=1e-4, atol=1e-5)


def test_strided_pointwise_serializes_and_rejects_other_kernels():
    layer = StridedPointwiseConv2D(4, 2, name="shortcut")
    clone = StridedPointwiseConv2D.from_config(layer.get_config())
    assert (clone.filters, clone.strides, clone.kernel_size) == (4, (2, 2), (1, 1))
    with pytest.raises(ValueError, match="1x1 only"):
        StridedPointwiseConv2D(4, 2, kernel_size=3)


def test_models_have_no_strided_conv2d():
    """The oneDNN kernel at fault is never reached: strided 1x1 convolutions use the new layer."""
    from conftest import tiny_bagnet_config

    from needles_tf.models.factory import build_model

    for fields in (dict(receptive_field=rf) for rf in (9, 33, 177)):
        model = build_model(tiny_bagnet_config(**fields))
        layers = model.backbone.layers
        strided = [layer for layer in layers if isinstance(layer, StridedPointwiseConv2D)]
        assert strided, "expected the stride-2 shortcuts to use StridedPointwiseConv2D"
        for layer in layers:
            if type(layer) is keras.layers.Conv2D and layer.kernel_size == (1, 1):
                assert layer.strides == (1, 1), layer.name


def _gradients(tmp_path: pathlib.Path, onednn: str) -> dict[str, np.ndarray]:
    out = tmp_path / f"gradients_onednn_{onednn}.npz"
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run(
        [sys.executable, str(GRADIENTS), f"--out={out}"],
        env=env,
        cwd=GRADIENTS.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, (
        f"TF_ENABLE_ONEDNN_OPTS={onednn}: exit {run.returncode}\n{run.stderr[-3000:]}"
    )
    return dict(np.load(out))


@pytest.mark.slow
def test_gradients_with_onednn_equal_eigens(tmp_path):
    """Every layer of every extractor (BagNet RF 9/33/177, multires; batch and instance norm)
    alone, and whole-model weight gradients where those are well conditioned."""
    onednn, eigen = _gradients(tmp_path, "1"), _gradients(tmp_path, "0")
    assert onednn.keys() == eigen.keys()
    assert sum(name.startswith("layer/") for name in eigen) > 500
    assert sum(name.startswith("model/") for name in eigen) > 100
    worst = {
        name: float(
            np.max(np.abs(onednn[name] - eigen[name])) / max(np.max(np.abs(eigen[name])), 1e-12)
        )
        for name in eigen
    }
    # A layer alone: round-off only. A whole training step amplifies it (an input moved by
    # 1e-7 moves the instance-normalized BagNets' gradients by 5e-4, weight_gradients.py);
    # on an AVX2-only AMD EPYC RF 9's differed by 1.5e-3.
    tolerance = {"layer": 1e-3, "model": 5e-3}
    bad = {name: error for name, error in worst.items() if error > tolerance[name.split("/")[0]]}
    assert not bad, f"relative differences above {tolerance}: {bad}"


@pytest.mark.parametrize("shape", [(2, 8, 10, 3), (1, 7, 9, 4), (3, 1, 1, 2)])
@pytest.mark.parametrize("strides", [(2, 2), (3, 2)])
def test_subsample_equals_a_strided_slice_with_dynamic_shapes(shape, strides):
    from needles_tf.layers.pointwise import subsample

    x = tf.constant(np.random.default_rng(2).normal(size=shape), tf.float32)
    expected = x[:, :: strides[0], :: strides[1], :].numpy()
    np.testing.assert_array_equal(subsample(x, *strides), expected)
    dynamic = tf.function(
        lambda v: subsample(v, *strides),
        input_signature=[tf.TensorSpec([None] * 4, tf.float32)],
        autograph=False,  # no Python control flow on tensors to convert
    )
    np.testing.assert_array_equal(dynamic(x), expected)
