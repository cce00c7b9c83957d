"""Sparse backpropagation: the same logits as the whole image, the exact gradient for max
pooling, a truncation that tends to the exact one for soft poolings; precise BN."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_bagnet_config

from needles_tf.models.factory import build_model
from needles_tf.models.heads import EmbeddingPoolingHead
from needles_tf.training.modes.sparse_backprop import (
    SparseBackprop,
    crop_windows,
    head_gradient_norm,
)
from needles_tf.training.precise_bn import batch_norm_layers, reestimate_statistics

IMAGES = np.random.default_rng(0).integers(0, 256, (2, 81, 73, 1)).astype(np.float32)
LABELS = np.array([[1.0], [0.0]], np.float32)


def batch_norm_model(head: str, pooling: str, receptive_field: int = 9) -> keras.Model:
    keras.utils.set_random_seed(3)
    config = tiny_bagnet_config(
        head=head, pooling=pooling, normalization="batch", receptive_field=receptive_field
    )
    model = build_model(config)
    reestimate_statistics(model, [IMAGES])  # statistics of the data: moderate activations
    return model


def gradients(model: keras.Model, logits_of) -> tuple[np.ndarray, list[np.ndarray]]:
    with tf.GradientTape() as tape:
        logits = logits_of(IMAGES)
        loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=LABELS, logits=logits))
    grads = tape.gradient(loss, model.trainable_variables)
    return np.asarray(logits), [np.asarray(g) for g in grads]


def dense_logits(model):
    return lambda images: model(images, training=False)["logits"]


def flat(grads: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([g.ravel() for g in grads])


def test_windows_are_the_cells_receptive_fields():
    images = tf.reshape(tf.range(2 * 20 * 20, dtype=tf.float32), (2, 20, 20, 1))
    windows = crop_windows(images, tf.constant([[1, 0, 1], [0, 1, 0]]), 9, 8)
    np.testing.assert_array_equal(windows[0], images[1, 0:9, 8:17])
    np.testing.assert_array_equal(windows[1], images[0, 8:17, 0:9])


def test_a_channel_dead_everywhere_selects_no_cell():
    """A ReLU channel that is zero on the whole image ties every cell for its maximum; its
    gradient stops at the ReLU, so it must not send every cell to be recomputed."""
    grid = np.zeros((1, 5, 6, 2), np.float32)
    grid[0, 3, 4, 1] = 2.0  # channel 1's maximum; channel 0 is dead
    head = EmbeddingPoolingHead(1, "max")
    score = np.asarray(head_gradient_norm(head, tf.constant(grid)))
    assert np.count_nonzero(score) == 1 and score[0, 3, 4] > 0


@pytest.mark.parametrize(("head", "pooling"), [("embedding", "max"), ("instance", "max")])
@pytest.mark.parametrize("receptive_field", [9, 33])
def test_max_pooling_gradient_is_exact(head, pooling, receptive_field):
    model = batch_norm_model(head, pooling, receptive_field)
    sparse = SparseBackprop(model)
    dense_out, dense = gradients(model, dense_logits(model))
    sparse_out, sparse_grads = gradients(model, sparse.sparse_logits)
    np.testing.assert_array_equal(sparse_out, dense_out)  # the whole image's logits
    assert len(sparse_grads) == len(dense) and flat(dense).any()
    for variable, d, s in zip(model.trainable_variables, dense, sparse_grads, strict=True):
        scale = max(float(np.abs(d).max()), 1e-6)
        np.testing.assert_allclose(s, d, rtol=1e-5, atol=1e-5 * scale, err_msg=variable.path)
    cells = sparse.selected_cells(model.embed(IMAGES))
    grid_cells = int(np.prod(model.embed(IMAGES).shape[:3]))
    assert 0 < len(cells) < grid_cells  # only the maxima are recomputed


@pytest.mark.slow
@pytest.mark.parametrize(
    ("head", "pooling"),
    [("embedding", "attention"), ("instance", "lse_lba"), ("embedding", "mean")],
)
def test_soft_pooling_gradient_tends_to_the_exact_one_with_k(head, pooling):
    model = batch_norm_model(head, pooling)
    dense_out, dense = gradients(model, dense_logits(model))
    cells = int(np.prod(model.embed(IMAGES).shape[1:3]))
    similarity = {}
    for k in (1, 4, 16, 0):
        out, grads = gradients(model, SparseBackprop(model, top_k=k).sparse_logits)
        np.testing.assert_array_equal(out, dense_out)  # the forward never changes
        a, b = flat(grads), flat(dense)
        similarity[k or cells] = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    print(f"{head} + {pooling}: cosine(sparse, dense) by cells per image {similarity}")
    # An untrained model spreads a soft pooling's weight evenly, so a few cells carry
    # little of the gradient (measured here: attention 0.17, -0.02, 0.40, 1.0 at
    # k = 1, 4, 16, all): the trend rises, not every step.
    assert similarity[cells] == pytest.approx(1.0, abs=1e-5)  # every cell: the exact gradient
    assert similarity[1] < similarity[16] < similarity[cells]


def test_cells_that_are_not_local_are_refused():
    keras.utils.set_random_seed(0)
    model = build_model(tiny_bagnet_config(normalization="instance"))
    with pytest.raises(
        ValueError, match=r"--mode=sparse_backprop .*--config.model.normalization=batch"
    ):
        SparseBackprop(model)
    with pytest.raises(ValueError, match=r"sparse_backprop\.top_k=-1"):
        SparseBackprop(batch_norm_model("embedding", "max"), top_k=-1)


def test_precise_bn_sets_the_population_statistics():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(keras.layers.Dense(4)(inputs)))
    batches = [
        np.random.default_rng(i).normal(3.0, 2.0, (8, 5)).astype("float32") for i in range(3)
    ]
    layer = batch_norm_layers(model)[0]
    assert reestimate_statistics(model, batches) == 3
    features = [np.asarray(model.layers[1](b)) for b in batches]
    np.testing.assert_allclose(
        layer.moving_mean, np.mean([f.mean(axis=0) for f in features], axis=0), rtol=1e-5
    )
    np.testing.assert_allclose(
        layer.moving_variance, np.mean([f.var(axis=0) for f in features], axis=0), rtol=1e-4
    )
    assert layer.momentum == 0.99  # restored


def test_tiles_give_the_whole_images_grid_and_gradient():
    model = batch_norm_model("embedding", "max")
    whole, tiled = SparseBackprop(model), SparseBackprop(model, tile_size=33)
    x = model.preprocessor(IMAGES)
    # oneDNN blocks a convolution by its input's shape, so a tile and the whole image sum
    # in other orders: on an AVX2-only AMD EPYC, single cells differed by up to 1.4e-4 of
    # their value, in the grid and in the gradient alike
    grid = whole.tiled_grid(x)
    atol = 1e-4 * float(np.abs(grid).max())
    np.testing.assert_allclose(tiled.tiled_grid(x), grid, rtol=1e-5, atol=atol)
    _, dense = gradients(model, whole.sparse_logits)
    _, by_tiles = gradients(model, tiled.sparse_logits)
    for d, t in zip(dense, by_tiles, strict=True):
        np.testing.assert_allclose(t, d, rtol=5e-4, atol=1e-4 * float(np.abs(d).max()))
    with pytest.raises(ValueError, match=r"sparse_backprop\.tile_size=8: expected at least"):
        SparseBackprop(model, tile_size=8)
