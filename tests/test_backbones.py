"""Backbones know their geometry, serialize as themselves, and are chosen by name in one place."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import tiny_bagnet_config

from needles_tf.models.backbone import BACKBONES, Backbone, get_backbone_class
from needles_tf.models.bagnet import BagNetBackbone
from needles_tf.models.factory import build_model
from needles_tf.models.multires import MultiResBackbone


def test_the_registry_names_every_backbone_and_rejects_others():
    assert {"bagnet": BagNetBackbone, "multires": MultiResBackbone} == BACKBONES
    with pytest.raises(
        ValueError, match=r"extractor='vit': expected one of \['bagnet', 'multires'\]"
    ):
        get_backbone_class("vit")


@pytest.mark.parametrize(
    ("backbone", "geometry", "local_cells", "grid"),
    [
        (BagNetBackbone(1, 9, 0.0625, normalization="batch"), (9, 8), True, 5),
        (BagNetBackbone(1, 33, 0.0625, normalization="instance"), (33, 8), False, 2),
        (
            MultiResBackbone(1, levels=2, saliency_stride=4, width=0.125, growth_rate=4),
            (4, 4),
            False,
            12,
        ),
    ],
)
def test_geometry_matches_the_grid(backbone, geometry, local_cells, grid):
    """A 48x48 input gives the grid that (receptive field, stride) predict."""
    assert backbone.geometry == geometry and backbone.local_cells is local_cells
    out = backbone(np.zeros((1, 48, 48, 1), np.float32))
    assert out.shape == (1, grid, grid, backbone.embedding_dim)
    if isinstance(backbone, BagNetBackbone):  # unpadded: one cell per window that fits
        rf, stride = geometry
        assert grid == (48 - rf) // stride + 1


@pytest.mark.parametrize("fields", [dict(), dict(extractor="multires", width=0.125, growth_rate=4)])
def test_a_backbone_round_trips_through_a_keras_file(tmp_path, fields):
    model = build_model(tiny_bagnet_config(**fields))
    x = np.random.default_rng(0).uniform(0, 255, (1, 40, 40, 1)).astype(np.float32)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    backbone, original = loaded.backbone, model.backbone
    assert type(backbone) is type(original) and isinstance(backbone, Backbone)
    assert backbone.get_config() == original.get_config()
    assert (backbone.geometry, backbone.local_cells) == (original.geometry, original.local_cells)
    np.testing.assert_allclose(loaded(x)["probability"], model(x)["probability"], rtol=1e-5)
