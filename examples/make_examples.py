r"""Regenerate the example images from the MNIST files: nMNIST canvases to try the models on.

    python examples/make_examples.py --mnist_dir=PATH_TO_MNIST [--out_dir=examples]

Writes canvases of digits from MNIST's test set (never seen in training): one with a
single 3 (`*_positive.png`) and one without (`*_negative.png`) at 64², 128², 256² and
1024², with the clutter of the nMNIST builder's configs (2, 5, 25 and 400 other digits,
Pawlowski et al. 2019 App. A.1), and a 4096² mosaic of 4,096 digits, one per 64-pixel
cell at a random offset, a single one of them a 3 (O2I 0.005%). Unlike the dataset's
canvases, digits here never overlap, so that a person can check every answer by eye.
`truth.json` gives each image's label and the needle's box in pixels (y0, x0, y1, x1).
The images are a pure function of the MNIST files and --seed.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
from absl import app, flags
from PIL import Image

from needles_tf.atomic import atomic_path, atomic_write_text
from tfds_builders.nmnist import mnist_idx, synthesis
from tfds_builders.nmnist.nmnist_dataset_builder import CANVAS_CLUTTER

_MNIST_DIR = flags.DEFINE_string("mnist_dir", None, "The four MNIST .gz files.", required=True)
_OUT_DIR = flags.DEFINE_string("out_dir", str(pathlib.Path(__file__).parent), "Where to write.")
_SEED = flags.DEFINE_integer("seed", 2026, "Seed of the digits' choice and placement.")

CANVASES = (64, 256, 1024)
LATER_CANVASES = (128,)  # drawn after the mosaic, so that the first images stay as they were
MOSAIC, MOSAIC_CELL = 4096, 64
DIGIT = synthesis.DIGIT_SIZE


def test_pool(mnist_dir: pathlib.Path) -> synthesis.DigitPool:
    images, labels = mnist_idx.read_split(
        mnist_dir / "t10k-images-idx3-ubyte.gz", mnist_dir / "t10k-labels-idx1-ubyte.gz"
    )
    return synthesis.DigitPool.from_range(images, labels, 0, len(images))


@dataclasses.dataclass
class Canvas:
    image: np.ndarray  # (size, size) uint8
    needle_box: list[int] | None  # y0, x0, y1, x1 in pixels


def draw(size: int, corners: np.ndarray, sources: np.ndarray, pool, needle: bool) -> Canvas:
    """Digits `sources` at `corners` (non-overlapping); the first is the needle if `needle`."""
    image = np.zeros((size, size), np.uint8)
    for (row, col), source in zip(corners.tolist(), sources.tolist(), strict=True):
        image[row : row + DIGIT, col : col + DIGIT] = pool.images[source]
    box = None
    if needle:
        row, col = (int(v) for v in corners[0])
        box = [row, col, row + DIGIT, col + DIGIT]
    return Canvas(image, box)


def scattered(size: int, clutter: int, needle: bool, pool, rng) -> Canvas:
    """`clutter` other digits (and a 3 first if `needle`) at random, non-overlapping places."""
    sources = pool.clutter[rng.integers(0, len(pool.clutter), clutter)]
    if needle:
        sources = np.concatenate([[pool.needles[rng.integers(len(pool.needles))]], sources])
    while (corners := _non_overlapping(size, len(sources), rng)) is None:
        pass  # a layout that jammed (64²: three digits fill 57% of it); draw another
    return draw(size, corners, sources, pool, needle)


def _non_overlapping(size: int, count: int, rng, tries: int = 1000) -> np.ndarray | None:
    """`count` top-left corners of digit boxes that do not overlap, placed one after the
    other at random; None if a box finds no room in `tries` draws."""
    occupied = np.zeros((size, size), bool)
    corners = []
    for _ in range(count):
        for _ in range(tries):
            row, col = rng.integers(0, size - DIGIT + 1, 2)
            if not occupied[row : row + DIGIT, col : col + DIGIT].any():
                break
        else:
            return None
        occupied[row : row + DIGIT, col : col + DIGIT] = True
        corners.append((row, col))
    return np.asarray(corners)


def mosaic(pool, rng) -> Canvas:
    """A digit in every MOSAIC_CELL cell at a random offset; one cell, at random, a 3."""
    cells = MOSAIC // MOSAIC_CELL
    rows, cols = np.divmod(np.arange(cells * cells), cells)
    offsets = rng.integers(0, MOSAIC_CELL - DIGIT + 1, (cells * cells, 2))
    corners = np.stack([rows, cols], axis=1) * MOSAIC_CELL + offsets
    first = rng.integers(cells * cells)  # the needle's cell goes first
    corners = np.concatenate([corners[first : first + 1], np.delete(corners, first, axis=0)])
    sources = pool.clutter[rng.integers(0, len(pool.clutter), cells * cells)]
    sources[0] = pool.needles[rng.integers(len(pool.needles))]
    return draw(MOSAIC, corners, sources, pool, needle=True)


def examples(pool: synthesis.DigitPool, seed: int):
    """(file name, Canvas) pairs."""
    rng = np.random.default_rng(seed)
    yield from pair_of_canvases(CANVASES, pool, rng)
    yield f"mosaic{MOSAIC}_one_3.png", mosaic(pool, rng)
    yield from pair_of_canvases(LATER_CANVASES, pool, rng)


def pair_of_canvases(sizes, pool, rng):
    """A positive and a negative canvas of each size, with the same number of digits."""
    for size in sizes:
        yield f"canvas{size}_positive.png", scattered(size, CANVAS_CLUTTER[size], True, pool, rng)
        clutter = CANVAS_CLUTTER[size] + 1
        yield f"canvas{size}_negative.png", scattered(size, clutter, False, pool, rng)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    mnist_dir = pathlib.Path(_MNIST_DIR.value)
    if not (mnist_dir / "t10k-images-idx3-ubyte.gz").is_file():
        raise app.UsageError(f"--mnist_dir={mnist_dir}: no t10k-images-idx3-ubyte.gz there.")
    out_dir = pathlib.Path(_OUT_DIR.value)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = {}
    for name, canvas in examples(test_pool(mnist_dir), _SEED.value):
        with atomic_path(out_dir / name) as temporary:
            Image.fromarray(canvas.image).save(temporary, format="PNG", optimize=True)
        box = canvas.needle_box
        truth[name] = {"label": int(box is not None), "needle_box": box, "size": len(canvas.image)}
        print(f"{out_dir / name}: {'a 3 at ' + str(box) if box else 'no 3'}")
    atomic_write_text(out_dir / "truth.json", json.dumps(truth, indent=1) + "\n")


if __name__ == "__main__":
    app.run(main)
