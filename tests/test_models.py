"""BagNet extractor (Pawlowski et al. 2019 App. B.2, Table 3), MIL heads and the model factory."""

from __future__ import annotations

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from needles_tf.configs import nmnist
from needles_tf.layers import normalization
from needles_tf.layers.pooling import POOLINGS
from needles_tf.models.bagnet import BagNetBackbone
from needles_tf.models.factory import build_model


def model_config(**overrides) -> ml_collections.ConfigDict:
    """The `model` part of needles_tf/configs/nmnist.py, at width 1/8 unless overridden."""
    config = nmnist.get_config().model
    config.update({"width": 0.125, **overrides})
    return config


@pytest.mark.parametrize("width, expected", [(1.0, 23_093_442), (0.25, 1_455_666)])
def test_parameter_count_is_the_papers(width, expected):
    """RF 33, 1-channel input, a 2-class linear head on embedding pooling (the paper's counts)."""
    model = build_model(model_config(width=width, num_classes=2))
    assert model.count_params() == expected


@pytest.mark.parametrize("receptive_field", [9, 33, 177])
def test_receptive_field(receptive_field, monkeypatch):
    """One interior embedding position depends on exactly an RF x RF window of pixels.

    Instance normalization couples all positions through its statistics; they are
    held constant here so that the gradient measures the convolutional field.
    """

    def constant_statistics(x, gamma, beta, epsilon):
        mean, variance = (tf.stop_gradient(m) for m in tf.nn.moments(x, (1, 2), keepdims=True))
        return (x - mean) * tf.math.rsqrt(variance + epsilon) * gamma + beta

    monkeypatch.setattr(normalization, "instance_normalize", constant_statistics)
    monkeypatch.setattr(normalization, "FUSED_KERNEL_MIN_VALUES", float("inf"))
    extractor = BagNetBackbone(1, receptive_field, width=0.125)
    size = receptive_field + 8 * 4
    image = tf.constant(np.random.default_rng(0).uniform(size=(1, size, size, 1)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(image)
        embedding = extractor(image)
        centre = embedding.shape[1] // 2
        target = tf.reduce_sum(embedding[0, centre, centre, :])
    rows, cols = np.nonzero(np.abs(tape.gradient(target, image)[0, ..., 0].numpy()))
    assert rows.max() - rows.min() + 1 == receptive_field
    assert cols.max() - cols.min() + 1 == receptive_field
    assert rows.min() == 8 * centre and cols.min() == 8 * centre


def head_for(pooling: str) -> str:
    return "embedding" if not POOLINGS[pooling].preserves_probability else "instance"


def compiled(model, run_eagerly: bool):
    model.compile(
        optimizer=keras.optimizers.RMSprop(5e-5),
        loss={"logits": keras.losses.BinaryCrossentropy(from_logits=True)},
        run_eagerly=run_eagerly,
        jit_compile=False,
    )
    return model


@pytest.mark.slow
def test_a_compiled_training_step_runs():
    """The graph-mode (tf.function) train step, as `fit` runs it; traced once (~15 s)."""
    model = compiled(build_model(model_config(pooling="lse_lba", head="instance")), False)
    images = np.random.default_rng(1).integers(0, 256, (4, 48, 48, 1)).astype(np.uint8)
    history = model.fit(images, {"logits": np.array([[0], [1], [0], [1]], np.float32)}, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.slow
@pytest.mark.parametrize("pooling", sorted(POOLINGS))
def test_every_pooling_trains_a_step_and_round_trips(pooling, tmp_path):
    """One eager training step changes the weights; `.keras` save/load keeps every output."""
    model = compiled(build_model(model_config(pooling=pooling, head=head_for(pooling))), True)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 48, 48, 1)).astype(np.uint8)
    labels = np.array([[0], [1], [0], [1]], np.float32)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(images, {"logits": labels}, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))

    path = tmp_path / f"{pooling}.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    ours, theirs = model(images), restored(images)
    assert set(ours) == set(theirs)
    for key in ours:
        np.testing.assert_allclose(np.asarray(ours[key]), np.asarray(theirs[key]), rtol=1e-5)


@pytest.mark.parametrize("head", ["embedding", "instance"])
@pytest.mark.parametrize("pooling", ["max", "attention"])
def test_outputs_are_named_and_shaped(head, pooling):
    model = build_model(model_config(head=head, pooling=pooling, num_classes=3))
    images = np.zeros((2, 56, 48, 3), np.float32)  # 3 channels into a 1-channel model
    outputs = model(images)
    assert outputs["logits"].shape == (2, 3) and outputs["probability"].shape == (2, 3)
    # The head's own map (CAM or instance probabilities), never the attention weights.
    assert outputs["saliency"].shape == (2, 3, 2, 3)
    assert ("attention" in outputs) == (pooling == "attention")
    if pooling == "attention":
        assert outputs["attention"].shape == (2, 3, 2, 1)
    probability = np.asarray(outputs["probability"])
    assert np.all((probability >= 0) & (probability <= 1))


def test_instance_head_saliency_is_the_pooled_probability_map():
    model = build_model(model_config(head="instance", pooling="max"))
    outputs = model(np.random.default_rng(2).integers(0, 256, (2, 48, 48, 1)).astype(np.uint8))
    np.testing.assert_allclose(
        np.asarray(outputs["probability"]),
        np.asarray(outputs["saliency"]).max(axis=(1, 2)),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"pooling": "noisy_or"}, "needs values in \\[0, 1\\]; use it with head='instance'"),
        ({"head": "instance", "pooling": "lse"}, "does not map probabilities"),
        ({"receptive_field": 17}, "receptive_field=17: expected one of \\[9, 33, 177\\]"),
        ({"input_channels": 2}, "input_channels=2: expected 1 or 3"),
        ({"extractor": "vit"}, "extractor='vit'"),
        ({"head": "mlp"}, "head='mlp'"),
        ({"pooling": "median"}, "pooling='median'"),
    ],
)
def test_bad_configs_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_model(model_config(**overrides))
