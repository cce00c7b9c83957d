"""Streaming inference: tile by tile with merged pooling states equals whole-image inference."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import tiny_bagnet_config
from test_predict import with_random_statistics

from needles_tf.layers.pooling import POOLINGS
from needles_tf.localization.methods import served_grid
from needles_tf.localization.streaming import StreamingModel, same_size_batches, stream_image
from needles_tf.localization.tiling import tiles
from needles_tf.models.factory import build_model

RECEPTIVE_FIELD, STRIDE = 9, 8


def combinations():
    for name, pooling in sorted(POOLINGS.items()):
        if not pooling.needs_probabilities:
            yield "embedding", name
        if pooling.preserves_probability:
            yield "instance", name


def random_model(**fields) -> keras.Model:
    """A tiny batch-normalized model with statistics and pooling parameters off their
    initial values, so that each of them matters."""
    keras.utils.set_random_seed(1)
    config = tiny_bagnet_config(normalization="batch", **fields)
    return away_from_initial(with_random_statistics(build_model(config)))


def away_from_initial(model: keras.Model) -> keras.Model:
    """Pooling parameters (sharpness, exponent, attention) moved off their initial values."""
    rng = np.random.default_rng(5)
    for variable in model.head.pooling.weights:
        variable.assign(variable + rng.normal(0, 0.3, variable.shape).astype("float32"))
    return model


# The quick loop streams one case of each kind of state (running max, online softmax,
# sums); `slow` runs every head and pooling.
QUICK = {("embedding", "max"), ("embedding", "attention"), ("instance", "lse_lba")}


@pytest.mark.parametrize(
    "head, pooling",
    [
        pytest.param(head, pooling, marks=() if (head, pooling) in QUICK else pytest.mark.slow)
        for head, pooling in combinations()
    ],
)
def test_streamed_tiles_equal_whole_image_inference(head, pooling):
    model = random_model(head=head, pooling=pooling, num_classes=2)
    image = np.random.default_rng(2).uniform(0, 255, (150, 190, 1)).astype("float32")
    whole = model(image[None], training=False)
    served = served_grid(model, whole)

    streamed = stream_image(StreamingModel.from_keras(model), image, 48, RECEPTIVE_FIELD, STRIDE)

    assert streamed["tiles"] == 4 * 5
    np.testing.assert_allclose(streamed["probability"], whole["probability"][0], rtol=1e-5)
    for key in ("saliency_grid", "saliency_unit"):  # every tile's slice of the whole map
        # oneDNN's AVX2 kernels sum a tile's convolutions in another order than the whole
        # image's: single cells 1.8e-4 of their value apart on an AMD EPYC
        np.testing.assert_allclose(streamed[key], served[key][0], rtol=5e-4, atol=1e-7)


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


@pytest.mark.parametrize("head, pooling", [("instance", "lse_lba"), ("embedding", "attention")])
def test_batches_of_tiles_give_the_answer_of_single_tiles(head, pooling):
    model = StreamingModel.from_keras(random_model(head=head, pooling=pooling))
    image = np.random.default_rng(4).uniform(0, 255, (150, 190, 1)).astype("float32")
    one = stream_image(model, image, 48, RECEPTIVE_FIELD, STRIDE, batch_size=1)
    batched = stream_image(model, image, 48, RECEPTIVE_FIELD, STRIDE, batch_size=3)
    for key in ("probability", "saliency_grid", "saliency_unit"):  # summation order apart
        np.testing.assert_allclose(batched[key], one[key], rtol=5e-4, atol=1e-7)


def test_same_size_batches_never_mix_sizes():
    tile_list, _ = tiles(150, 190, 48, RECEPTIVE_FIELD, STRIDE)
    batches = list(same_size_batches(tile_list, 3))
    assert [t for b in batches for t in b] == tile_list
    assert all(len({t.shape for t in b}) == 1 and len(b) <= 3 for b in batches)
