"""Saliency methods on a tiny BagNet: shapes, agreement with the model's maps, their maths."""

from __future__ import annotations

import keras
import ml_collections
import numpy as np
import pytest
from conftest import tiny_bagnet_config

from needles_tf.localization.methods import (
    SALIENCY_METHODS,
    SparseInversion,
    get_saliency_method,
    soft_threshold,
)
from needles_tf.localization.upsample import saliency_to_input
from needles_tf.models.factory import build_model


def tiny(head: str, pooling: str) -> tuple[keras.Model, ml_collections.ConfigDict]:
    config = tiny_bagnet_config(head=head, pooling=pooling)
    keras.utils.set_random_seed(0)
    return build_model(config), config


IMAGES = np.random.default_rng(0).integers(0, 256, (2, 40, 40, 1)).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("head", "pooling", "methods"),
    [
        ("instance", "lse_lba", ["instance", "gradient", "gradient_input", "sparse_inversion"]),
        ("embedding", "max", ["cam", "gradient"]),
        ("embedding", "attention", ["attention"]),
    ],
)
def test_methods_give_finite_maps_at_input_size(head, pooling, methods):
    model, _ = tiny(head, pooling)
    for name in methods:
        maps = np.asarray(get_saliency_method(name)(model, IMAGES).raw)
        assert maps.shape == (2, 40, 40) and np.isfinite(maps).all(), name
        unit = np.asarray(get_saliency_method(name)(model, IMAGES).unit)
        assert unit.shape == (2, 40, 40) and unit.min() >= 0.0 and unit.max() <= 1.0, name


def test_instance_map_is_the_upsampled_instance_probability():
    model, _ = tiny("instance", "lse_lba")
    grid = model(IMAGES)["saliency"]
    expected = np.asarray(saliency_to_input(grid, 40, 40, *model.geometry))[..., 0]
    got = SALIENCY_METHODS["instance"](model, IMAGES)
    np.testing.assert_allclose(np.asarray(got.raw), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got.unit), expected, rtol=1e-6)  # already in [0, 1]


def test_a_method_the_model_cannot_give_is_named():
    model, _ = tiny("instance", "lse_lba")
    with pytest.raises(ValueError, match=r"--saliency='cam' needs a model with head='embedding'"):
        SALIENCY_METHODS["cam"](model, IMAGES)
    with pytest.raises(ValueError, match=r"--saliency='attention' needs pooling='attention'"):
        SALIENCY_METHODS["attention"](model, IMAGES)
    with pytest.raises(ValueError, match=r"--saliency='grad'.*'gradient'"):
        get_saliency_method("grad")


def test_gradient_matches_a_finite_difference():
    model, _ = tiny("instance", "lse_lba")  # smooth pooling: the difference is local
    maps = np.asarray(SALIENCY_METHODS["gradient"](model, IMAGES[:1]).raw)
    y, x = np.unravel_index(np.argmax(maps[0]), maps[0].shape)
    step = 0.01
    plus, minus = IMAGES[:1].copy(), IMAGES[:1].copy()
    plus[0, y, x, 0] += step
    minus[0, y, x, 0] -= step
    difference = (model(plus)["logits"][0, 0] - model(minus)["logits"][0, 0]) / (2 * step)
    assert abs(float(difference)) == pytest.approx(float(maps[0, y, x]), rel=0.05)


def test_gradient_times_input_is_the_gradient_weighted_by_the_pixel():
    model, _ = tiny("instance", "lse_lba")
    images = IMAGES.copy()
    images[:, :10] = 0.0  # a black band: no share of the logit
    gradient = np.asarray(SALIENCY_METHODS["gradient"](model, images).raw)
    product = np.asarray(SALIENCY_METHODS["gradient_input"](model, images).raw)
    np.testing.assert_allclose(product, gradient * images[..., 0], rtol=1e-5, atol=1e-6)
    assert np.all(product[:, :10] == 0.0) and product[:, 10:].max() > 0.0


@pytest.mark.slow
def test_soft_threshold_and_sparse_inversion_limits():
    values = np.array([-2.0, -0.5, 0.0, 0.3, 1.5], np.float32)
    np.testing.assert_allclose(np.asarray(soft_threshold(values, 1.0)), [-1.0, 0, 0, 0, 0.5])
    model, _ = tiny("instance", "lse_lba")
    unchanged = np.asarray(SparseInversion(steps=0)(model, IMAGES).raw)
    np.testing.assert_allclose(unchanged, IMAGES[..., 0] / 255.0, rtol=1e-6)
    assert np.all(np.asarray(SparseInversion(steps=1, sparsity=1e9)(model, IMAGES).raw) == 0.0)
    # Sparsity removes evidence: fewer nonzero pixels survive than were in the image.
    kept = np.asarray(SparseInversion(steps=5, sparsity=0.05)(model, IMAGES).raw)
    assert 0 < np.count_nonzero(kept) < np.count_nonzero(IMAGES)


def test_cam_and_attention_are_two_maps_under_attention_pooling():
    """The class activation map is the classifier at every position, not the attention."""
    model, _ = tiny("embedding", "attention")
    cam = np.asarray(SALIENCY_METHODS["cam"](model, IMAGES).raw)
    attention = np.asarray(SALIENCY_METHODS["attention"](model, IMAGES).raw)
    assert cam.shape == attention.shape == (2, 40, 40)
    assert not np.allclose(cam, attention)
    outputs = model(IMAGES)
    classifier = model.head.classifier
    np.testing.assert_allclose(  # the CAM at each position: the image classifier applied there
        outputs["saliency"], classifier(model.embed(IMAGES)), rtol=1e-5, atol=1e-6
    )


def test_unit_forms():
    """On the grid: instance as it is, cam through a sigmoid, attention over its peak;
    pixel methods over their peak. At the input: the unit grid, upsampled."""
    model, _ = tiny("embedding", "attention")
    outputs = model(IMAGES)
    cam, attention = SALIENCY_METHODS["cam"], SALIENCY_METHODS["attention"]
    cam_grid = np.asarray(outputs["saliency"])
    np.testing.assert_allclose(cam.unit_grid(cam_grid), 1 / (1 + np.exp(-cam_grid)), rtol=1e-5)
    weights = np.asarray(outputs["attention"])
    peak = weights.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(attention.unit_grid(weights), weights / peak, rtol=1e-6)
    maps = cam(model, IMAGES)
    upsampled = saliency_to_input(1 / (1 + np.exp(-cam_grid)), 40, 40, *model.geometry)
    np.testing.assert_allclose(maps.unit, np.asarray(upsampled)[..., 0], rtol=1e-5)
    gradient = SALIENCY_METHODS["gradient"](model, IMAGES)
    np.testing.assert_allclose(np.asarray(gradient.unit).max(axis=(1, 2)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        gradient.unit, gradient.raw / np.asarray(gradient.raw).max(axis=(1, 2))[:, None, None]
    )
    instance_model, _ = tiny("instance", "lse_lba")
    grid = np.asarray(instance_model(IMAGES)["saliency"])
    np.testing.assert_array_equal(SALIENCY_METHODS["instance"].unit_grid(grid), grid)


@pytest.mark.slow
def test_the_default_method_is_the_heads_own_map():
    assert tiny("embedding", "max")[0].head.default_saliency == "cam"
    assert tiny("embedding", "attention")[0].head.default_saliency == "attention"
    assert tiny("instance", "lse_lba")[0].head.default_saliency == "instance"
    assert tiny("instance", "attention")[0].head.default_saliency == "instance"
