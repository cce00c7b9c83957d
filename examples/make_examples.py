r"""Regenerate the example images from the MNIST files: nMNIST canvases to try the models on.

    python examples/make_examples.py --mnist_dir=../shared/data/mnist [--out_dir=examples]

Writes, with digits of MNIST's test set (never seen in training) placed as the nMNIST
builder places them (tfds_builders/nmnist/synthesis.py, Pawlowski et al. 2019 App. A.1):
a canvas with one 3 (`*_positive.png`) and one without (`*_negative.png`) at 64², 256²
and 1024², with the clutter of the builder's configs (2, 25 and 400 other digits), and a
4096² mosaic of 6,400 digits with a single 3 (O2I 0.005%). `truth.json` gives each
image's label and the needle's box in pixels (y0, x0, y1, x1). The canvases are a pure
function of the MNIST files and --seed.
"""

from __future__ import annotations

import json
import pathlib

from absl import app, flags
from PIL import Image

from needles_tf.atomic import atomic_path, atomic_write_text
from tfds_builders.nmnist import mnist_idx, synthesis
from tfds_builders.nmnist.nmnist_dataset_builder import CANVAS_CLUTTER

_MNIST_DIR = flags.DEFINE_string("mnist_dir", None, "The four MNIST .gz files.", required=True)
_OUT_DIR = flags.DEFINE_string("out_dir", str(pathlib.Path(__file__).parent), "Where to write.")
_SEED = flags.DEFINE_integer("seed", 2026, "Seed of the digits' choice and placement.")

CANVASES = (64, 256, 1024)
MOSAIC = 4096


def test_pool(mnist_dir: pathlib.Path) -> synthesis.DigitPool:
    images, labels = mnist_idx.read_split(
        mnist_dir / "t10k-images-idx3-ubyte.gz", mnist_dir / "t10k-labels-idx1-ubyte.gz"
    )
    return synthesis.DigitPool.from_range(images, labels, 0, len(images))


def examples(pool: synthesis.DigitPool, seed: int):
    """(file name, Example) pairs: k = 0 is a positive, k = 1 a negative (synthesis.compose)."""
    for size in CANVASES:
        layout = synthesis.Layout(size, CANVAS_CLUTTER[size], seed, split_key=3)
        yield f"canvas{size}_positive.png", synthesis.compose(layout, pool, 0)
        yield f"canvas{size}_negative.png", synthesis.compose(layout, pool, 1)
    layout = synthesis.Layout(MOSAIC, CANVAS_CLUTTER[MOSAIC], seed, split_key=3)
    yield f"mosaic{MOSAIC}_one_3.png", synthesis.compose(layout, pool, 0)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    mnist_dir = pathlib.Path(_MNIST_DIR.value)
    if not (mnist_dir / "t10k-images-idx3-ubyte.gz").is_file():
        raise app.UsageError(f"--mnist_dir={mnist_dir}: no t10k-images-idx3-ubyte.gz there.")
    out_dir = pathlib.Path(_OUT_DIR.value)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = {}
    for name, example in examples(test_pool(mnist_dir), _SEED.value):
        with atomic_path(out_dir / name) as temporary:
            Image.fromarray(example.image).save(temporary, format="PNG", optimize=True)
        box = None
        if example.label:
            row, col = (int(v) for v in example.corners[0])
            box = [row, col, row + synthesis.DIGIT_SIZE, col + synthesis.DIGIT_SIZE]
        truth[name] = {"label": example.label, "needle_box": box, "size": example.image.shape[0]}
        print(f"{out_dir / name}: {'a 3 at ' + str(box) if box else 'no 3'}")
    atomic_write_text(out_dir / "truth.json", json.dumps(truth, indent=1) + "\n")


if __name__ == "__main__":
    app.run(main)
