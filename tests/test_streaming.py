"""Streaming inference: tile by tile with merged pooling states equals whole-image inference."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import tiny_bagnet_config
from test_predict import with_random_statistics

from needles_tf.layers.pooling import POOLINGS
from needles_tf.localization.methods import served_grid
from needles_tf.localization.streaming import StreamingModel, stream_image
from needles_tf.localization.tiling import tiles
from needles_tf.models.factory import build_model

RECEPTIVE_FIELD, STRIDE = 9, 8


def combinations():
    for name, pooling in sorted(POOLINGS.items()):
        if not pooling.needs_probabilities:
            yield "embedding", name
        if pooling.preserves_probability:
            yield "instance", name


def away_from_initial(model: keras.Model) -> keras.Model:
    """Pooling parameters (sharpness, exponent, attention) moved off their initial values."""
    rng = np.random.default_rng(5)
    for variable in model.head.pooling.weights:
        variable.assign(variable + rng.normal(0, 0.3, variable.shape).astype("float32"))
    return model


@pytest.mark.parametrize("head, pooling", list(combinations()))
def test_streamed_tiles_equal_whole_image_inference(head, pooling):
    config = tiny_bagnet_config(normalization="batch", head=head, pooling=pooling, num_classes=2)
    keras.utils.set_random_seed(1)
    model = away_from_initial(with_random_statistics(build_model(config)))
    image = np.random.default_rng(2).uniform(0, 255, (150, 190, 1)).astype("float32")
    whole = model(image[None], training=False)
    served = served_grid(model, whole)

    streamed = stream_image(StreamingModel.from_keras(model), image, 48, RECEPTIVE_FIELD, STRIDE)

    assert streamed["tiles"] == 4 * 5
    np.testing.assert_allclose(streamed["probability"], whole["probability"][0], rtol=1e-5)
    for key in ("saliency_grid", "saliency_unit"):  # every tile's slice of the whole map
        np.testing.assert_allclose(streamed[key], served[key][0], rtol=1e-5, atol=1e-7)


def test_tiles_cover_the_grid_once_in_reading_order():
    tile_list, grid = tiles(150, 190, 48, RECEPTIVE_FIELD, STRIDE)
    covered = np.zeros(grid, int)
    for tile in tile_list:
        covered[tile.cells] += 1
    assert grid == (18, 23) and np.all(covered == 1)
    assert [t.rows.start for t in tile_list[:6]] == [0] * 5 + [40]


def test_an_image_smaller_than_the_receptive_field_is_refused():
    with pytest.raises(ValueError, match="image of 8x100 pixels: expected at least"):
        tiles(8, 100, 48, RECEPTIVE_FIELD, STRIDE)
