"""The PNG encoder round-trips; the worker pool returns what one process would."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from tfds_builders.nmnist import parallel
from tfds_builders.nmnist.png import encode_gray_png


@pytest.mark.parametrize("shape", [(1, 1), (28, 28), (64, 96), (33, 17, 1)])
def test_png_round_trips(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    image[: shape[0] // 2] = 0  # a sparse part, as on nMNIST canvases
    decoded = np.asarray(Image.open(io.BytesIO(encode_gray_png(image))))
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, image.reshape(shape[:2]))


@pytest.mark.parametrize(
    "image, message",
    [(np.zeros((4, 4), np.float32), "uint8"), (np.zeros((4, 4, 3), np.uint8), r"\(H, W\)")],
)
def test_png_rejects_what_it_cannot_encode(image, message):
    with pytest.raises(ValueError, match=message):
        encode_gray_png(image)


def affine(scale, offset, i):
    return scale * i + offset


@pytest.mark.parametrize("num_workers", [1, 2])
def test_ordered_map_matches_a_plain_loop(num_workers):
    got = list(parallel.ordered_map(affine, (3, 1), range(50), num_workers, chunk_size=4))
    assert got == [(i, 3 * i + 1) for i in range(50)]


def test_ordered_map_stops_early_without_error():
    results = parallel.ordered_map(affine, (1, 0), range(10_000), 2, chunk_size=1)
    assert list(itertools.islice(results, 5)) == [(i, i) for i in range(5)]
    results.close()
