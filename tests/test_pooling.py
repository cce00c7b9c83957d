"""Global pooling operators: definitions, Yao et al. 2018 §3.5 properties, numerical stability."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from needles_tf.layers import pooling as pooling_lib

RNG = np.random.default_rng(0)


def pool(name, x, **kwargs):
    return np.asarray(pooling_lib.get_pooling(name, **kwargs)(x))


@pytest.mark.parametrize("name", sorted(pooling_lib.POOLINGS))
def test_every_pooling_pools_positions_and_round_trips(name):
    layer = pooling_lib.get_pooling(name)
    x = RNG.uniform(0, 1, (2, 5, 7, 3)).astype(np.float32)
    y = np.asarray(layer(x))
    assert y.shape == (2, 3) and np.all(np.isfinite(y))
    clone = layer.__class__.from_config(layer.get_config())
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x)), y, rtol=1e-6)


def test_unknown_pooling_names_the_choices():
    with pytest.raises(ValueError, match=r"pooling='median': expected one of \['attention'"):
        pooling_lib.get_pooling("median")


def test_definitions():
    x = RNG.normal(size=(2, 4, 3, 2)).astype(np.float32)
    flat = x.reshape(2, -1, 2)
    np.testing.assert_allclose(pool("max", x), flat.max(1), rtol=1e-6)
    np.testing.assert_allclose(pool("mean", x), flat.mean(1), rtol=1e-5)
    np.testing.assert_allclose(pool("lse", x), np.log(np.exp(flat).sum(1)), rtol=1e-5)
    r = 3.0
    expected = np.log(np.exp(r * flat).mean(1)) / r
    np.testing.assert_allclose(pool("lse_r", x, r=r), expected, rtol=1e-5)
    p = RNG.uniform(0, 1, (2, 4, 3, 2)).astype(np.float32)
    np.testing.assert_allclose(
        pool("noisy_or", p), 1 - np.prod(1 - p.reshape(2, -1, 2), 1), rtol=1e-5
    )
    np.testing.assert_allclose(
        pool("gm", p, p=2.0), np.sqrt((p.reshape(2, -1, 2) ** 2).mean(1)), rtol=1e-4
    )


def test_lse_lba_preserves_probabilities_and_lies_between_mean_and_max():
    zeros, ones = np.zeros((1, 8, 8, 2), np.float32), np.ones((1, 8, 8, 2), np.float32)
    np.testing.assert_allclose(pool("lse_lba", zeros), 0.0, atol=1e-6)
    np.testing.assert_allclose(pool("lse_lba", ones), 1.0, atol=1e-6)
    s = RNG.uniform(0, 1, (4, 8, 8, 2)).astype(np.float32)
    p = pool("lse_lba", s)
    flat = s.reshape(4, -1, 2)
    assert np.all(p >= flat.mean(1) - 1e-6) and np.all(p <= flat.max(1) + 1e-6)
    bigger = s.copy()
    bigger[:, 3, 4, :] = np.minimum(bigger[:, 3, 4, :] + 0.2, 1.0)
    assert np.all(pool("lse_lba", bigger) > p)


def test_lse_lba_with_a_large_sharpness_approaches_max():
    s = RNG.uniform(0, 1, (2, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(pool("lse_lba", s, r0=1e4), s.max(axis=(1, 2)), atol=1e-3)


def test_lse_lba_learns_its_sharpness():
    layer = pooling_lib.get_pooling("lse_lba", r0=5.0)
    s = tf.constant(RNG.uniform(0, 1, (2, 6, 6, 1)).astype(np.float32))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(layer(s))
    (grad,) = tape.gradient(y, layer.trainable_variables)
    assert float(layer.sharpness) == pytest.approx(6.0) and grad != 0


@pytest.mark.parametrize("name", ["attention", "gated_attention"])
def test_attention_weights_sum_to_one(name):
    layer = pooling_lib.get_pooling(name, return_weights=True)
    x = RNG.normal(size=(3, 5, 6, 4)).astype(np.float32)
    pooled, weights = layer(x)
    weights = np.asarray(weights)
    assert weights.shape == (3, 5, 6, 1) and np.all(weights >= 0)
    np.testing.assert_allclose(weights.sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(pooled), (weights * x).sum(axis=(1, 2)), rtol=1e-4)


def test_weights_only_where_the_pooling_has_them():
    with pytest.raises(ValueError, match="'max' pooling has no position weights"):
        pooling_lib.get_pooling("max", return_weights=True)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("lse", {}),
        ("lse_r", {"r": 1e4}),
        ("lse_lba", {"r0": 1e4}),
        ("gm", {"p": 50.0}),
        ("noisy_or", {}),
        ("max", {}),
        ("mean", {}),
        ("attention", {}),
        ("gated_attention", {}),
    ],
)
@pytest.mark.parametrize("value", [0.0, 1e-12, 1.0])
def test_values_and_gradients_stay_finite_at_extremes(name, kwargs, value):
    """512x512 positions of extreme probabilities, plus one large spike."""
    x = np.full((1, 512, 512, 1), value, np.float32)
    x[0, 100, 200, 0] = 1.0
    layer = pooling_lib.get_pooling(name, **kwargs)
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        total = tf.reduce_sum(y)
    grad = tape.gradient(total, x)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(grad))


def test_lse_survives_huge_logits():
    x = tf.constant(np.array([1e4, -1e4, 3.0], np.float32).reshape(1, 1, 3, 1))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(pooling_lib.get_pooling("lse")(x))
    assert float(y) == pytest.approx(1e4)
    assert np.all(np.isfinite(tape.gradient(y, x)))


def test_noisy_or_does_not_underflow_with_many_small_probabilities():
    p = np.full((1, 512, 512, 1), 1e-9, np.float32)
    expected = -np.expm1(512 * 512 * np.log1p(-1e-9))
    assert float(pool("noisy_or", p)[0, 0]) == pytest.approx(expected, rel=1e-3)


def noisy_or_logit_reference(logits: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) of 1 - Π (1 - sigmoid(z)), in float64."""
    log_none = -np.logaddexp(0.0, logits.astype(np.float64)).sum(axis=(1, 2))
    return np.log(-np.expm1(log_none)) - log_none


@pytest.mark.parametrize("cells", [3, 64])
def test_noisy_or_image_logit_stays_trainable_on_a_large_grid(cells):
    """4096 instances of probability 0.005 make the pooled probability 1 in float32; the
    logit in log space keeps its value and a gradient (3 of 4 seeds stopped learning)."""
    logits = np.full((2, cells, cells, 1), np.log(0.005 / 0.995), np.float32)
    logits[1, 0, 0, 0] = 4.0  # one confident instance
    z = tf.constant(logits)
    layer = pooling_lib.get_pooling("noisy_or")
    with tf.GradientTape() as tape:
        tape.watch(z)
        image_logit = layer.image_logit(z)
    gradient = tape.gradient(image_logit, z).numpy()
    np.testing.assert_allclose(image_logit.numpy(), noisy_or_logit_reference(logits), rtol=1e-5)
    assert np.all(np.isfinite(gradient)) and np.all(gradient > 0)
    probability = np.asarray(pool("noisy_or", 1 / (1 + np.exp(-logits))))
    np.testing.assert_allclose(1 / (1 + np.exp(-image_logit.numpy())), probability, atol=1e-6)
    with tf.GradientTape() as tape:  # the old route: probability, clipped, to a logit
        tape.watch(z)
        clipped = tf.clip_by_value(layer(tf.sigmoid(z)), 1e-7, 1 - 1e-7)
        old_logit = tf.math.log(clipped) - tf.math.log1p(-clipped)
    old_gradient = tape.gradient(old_logit, z).numpy()
    assert (np.abs(old_gradient).max() == 0.0) == (cells == 64)  # what the change is for


def test_poolings_compute_in_float32_under_mixed_precision():
    x = keras.ops.cast(RNG.uniform(0, 1, (1, 4, 4, 1)), "bfloat16")
    assert keras.ops.convert_to_numpy(pooling_lib.get_pooling("lse_lba")(x)).dtype == np.float32


@pytest.mark.parametrize("size", [1, 7, 48, 300])
@pytest.mark.parametrize("name, kwargs", [("lse_lba", {"r0": 5.0}), ("lse_r", {"r": 10.0})])
def test_mean_logsumexp_never_exceeds_the_maximum(name, kwargs, size):
    """Rounding once gave 1.0000001 for a probability map (float32 log of a sum of exps)."""
    rng = np.random.default_rng(size)
    s = np.concatenate([np.ones((1, size, size, 1)), rng.uniform(0, 1, (3, size, size, 1))]).astype(
        np.float32
    )
    assert np.all(pool(name, s, **kwargs) <= s.max(axis=(1, 2)))
