"""The multi-resolution extractor of Yao et al. 2018: shapes, structure, serialization, training."""

from __future__ import annotations

import keras
import ml_collections
import numpy as np
import pytest

from needles_tf.models import multires
from needles_tf.models.factory import build_model


def multires_config(**fields) -> ml_collections.ConfigDict:
    config = dict(
        extractor="multires",
        input_channels=1,
        head="instance",
        pooling="lse_lba",
        pooling_kwargs={"r0": 5.0},
        num_classes=3,
        dtype_policy="float32",
        levels=3,
        saliency_stride=8,
        width=0.25,
        growth_rate=4,
        dense_layers=2,
        normalization="batch",
    )
    return ml_collections.ConfigDict({**config, **fields})


@pytest.mark.parametrize(
    "size, stride, levels, grid",
    [
        ((128, 128), 8, 3, (16, 16)),  # 512 -> 64 of the paper, scaled down
        ((128, 96), 4, 2, (32, 24)),
        ((100, 75), 8, 3, (13, 10)),  # odd sizes: ceil at each halving, crops on the way up
        ((64, 64), 2, 1, (32, 32)),  # one level: no fusion
    ],
)
def test_saliency_resolution_is_input_over_stride(size, stride, levels, grid):
    model = build_model(multires_config(saliency_stride=stride, levels=levels))
    outputs = model(np.zeros((2, *size, 1), np.float32))
    assert outputs["saliency"].shape == (2, *grid, 3)
    assert outputs["probability"].shape == (2, 3)
    backbone = model.backbone
    assert backbone.geometry == (stride, stride) and not backbone.local_cells


def test_levels_dense_blocks_and_fusion_are_wired_as_in_the_paper():
    model = multires.MultiResBackbone(1, levels=3, saliency_stride=8, width=0.25, growth_rate=4)
    names = {layer.name for layer in model.layers}
    # ResNet halvings to strides 4, 8, 16, 32; dense blocks at 8, 16, 32; fusion 32 -> 16 -> 8.
    assert {"down4_add", "down8_add", "down16_add", "down32_add"} <= names
    assert {"dense8_out", "dense16_out", "dense32_out"} <= names and "dense4_out" not in names
    assert {"up16", "up8", "fuse16_conv", "fuse8_conv"} <= names and "up32" not in names
    x = np.zeros((1, 64, 64, 1), np.float32)
    dense32 = keras.Model(model.input, model.get_layer("dense32_out").output)(x)
    # F_1 (width 32·0.25 = 8 at stride 2, x2 per halving: 128 at stride 32) ⊕ 2 maps of 4.
    assert dense32.shape == (1, 2, 2, 128 + 2 * 4)
    assert model.output.shape[-1] == 32  # fused at stride 8 to the ResNet width there


def test_upsample_like_is_nearest_neighbour_and_crops():
    x = np.arange(6, dtype=np.float32).reshape(1, 2, 3, 1)
    reference = np.zeros((1, 3, 5, 7), np.float32)
    up = np.asarray(multires.UpsampleLike()(x, reference))
    assert up.shape == (1, 3, 5, 1)
    np.testing.assert_array_equal(
        up[0, :, :, 0], [[0, 0, 1, 1, 2], [0, 0, 1, 1, 2], [3, 3, 4, 4, 5]]
    )


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="saliency_stride=6: expected a power of 2"):
        multires.MultiResBackbone(1, saliency_stride=6)
    with pytest.raises(ValueError, match="levels=0"):
        multires.MultiResBackbone(1, levels=0)


def test_keras_file_round_trip(tmp_path):
    model = build_model(multires_config())
    path = tmp_path / "multires.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(0).uniform(0, 255, (1, 48, 40, 1)).astype(np.float32)
    for name in ("probability", "saliency"):
        np.testing.assert_allclose(loaded(x)[name], model(x)[name], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_multi_label_training_steps_lower_the_loss():
    """K = 3 sigmoid outputs, binary cross-entropy per class: a few steps fit a tiny batch."""
    from needles_tf.configs import multires
    from needles_tf.training.modes.image import ImageLabels
    from needles_tf.training.optimizers import make_optimizer

    keras.utils.set_random_seed(0)
    config = multires.get_config()
    config.model = multires_config()
    config.update(lr_decay_epochs=(), batch_size=4, effective_batch_size=4)
    optimizer = make_optimizer(config, steps_per_epoch=10)
    training = ImageLabels(config).training_model(build_model(config.model), optimizer)
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (4, 32, 32, 1)).astype(np.float32)
    labels = rng.integers(0, 2, (4, 3)).astype(np.float32)
    history = training.fit(images, labels, epochs=8, batch_size=4, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert set(history) >= {"accuracy", "auc", "loss"}
