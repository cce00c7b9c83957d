r"""Tiled against whole-image inference on a large mosaic with one needle; prints the figures.

    python benchmarks/tiled_inference.py --model=RUN/saved_model/1 \
        --dataset=nmnist/canvas_64 --tfds_data_dir=DIR --canvases=32 --tile_size=512

The mosaic is --canvases x --canvases test images of the dataset side by side,
all negatives but one positive placed at random: a haystack --canvases² times
the size the model was trained on. Prints, for whole-image inference and for
tiles of --tile_size: seconds, megapixels/s, the probability, whether the peak
saliency window lies on the needle's box, and the largest differences between
the two (zero up to float rounding for models with batch normalization).
The mosaic and the tiled overlay are written to --out_dir if given.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags
from PIL import Image

import tfds_builders  # noqa: F401  (registers the datasets)
from needles_tf import predict

_MODEL = flags.DEFINE_string("model", None, "SavedModel directory or .keras file.", required=True)
_DATASET = flags.DEFINE_string("dataset", "nmnist/canvas_64", "TFDS dataset with needle_bbox.")
_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory.")
_CANVASES = flags.DEFINE_integer("canvases", 32, "Mosaic side, in dataset images.")
_TILE_SIZE = flags.DEFINE_integer("tile_size", 512, "Tile side for the tiled run, in pixels.")
_SEED = flags.DEFINE_integer("seed", 0, "Which negatives, and where the positive goes.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Write mosaic.png and its overlay here.")


def mosaic(side: int, seed: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(image, needle box in pixels y0, x0, y1, x1) of side x side test images."""
    rng = np.random.default_rng(seed)
    examples = tfds.load(_DATASET.value, split="test", data_dir=_DATA_DIR.value)
    positive, negatives = None, []
    for example in examples.as_numpy_iterator():
        if example["label"] and positive is None:
            positive = example
        elif not example["label"] and len(negatives) < side * side - 1:
            negatives.append(example["image"])
        if positive is not None and len(negatives) == side * side - 1:
            break
    if positive is None or len(negatives) < side * side - 1:
        raise app.UsageError(f"--canvases={side}: the test split has too few images.")
    slot = int(rng.integers(side * side))
    tiles = [*negatives[:slot], positive["image"], *negatives[slot:]]
    height, width = tiles[0].shape[:2]
    image = np.concatenate(
        [np.concatenate(tiles[r * side : (r + 1) * side], axis=1) for r in range(side)], axis=0
    )
    top, left = (slot // side) * height, (slot % side) * width
    y0, x0, y1, x1 = positive["needle_bbox"] * [height, width, height, width]
    return image, (top + int(y0), left + int(x0), top + int(np.ceil(y1)), left + int(np.ceil(x1)))


def hits(peak: dict, box: tuple[int, int, int, int]) -> bool:
    """Whether the peak window's centre lies in the needle's box."""
    y0, x0, y1, x1 = box
    return y0 <= peak["y"] < y1 and x0 <= peak["x"] < x1


def main(argv: list[str]) -> None:
    del argv
    model = predict.load_exported(_MODEL.value)
    image, box = mosaic(_CANVASES.value, _SEED.value)
    pixels = image.astype(np.float32)
    megapixels = image.shape[0] * image.shape[1] / 1e6
    print(f"mosaic {image.shape[1]}x{image.shape[0]} ({megapixels:.1f} MP), needle box {box}")
    results = {}
    for name, tile in (("whole", max(image.shape)), ("tiled", _TILE_SIZE.value)):
        predict.predict_image(model, pixels[:64, :64], tile)  # warm up: trace, allocate
        start = time.perf_counter()
        result = predict.predict_image(model, pixels, tile)
        seconds = time.perf_counter() - start
        peak = predict.maximum_saliency(result["saliency_grid"], 0, model.geometry)
        results[name] = result | {"peak": peak}
        print(
            f"{name:>6}: {result['tiles']:>3} tile(s)  {seconds:6.2f} s  "
            f"{megapixels / seconds:6.2f} MP/s  p={float(result['probability'][0]):.4f}  "
            f"peak at ({peak['x']:.0f}, {peak['y']:.0f}) on the needle: {hits(peak, box)}"
        )
    difference = {
        key: float(np.max(np.abs(results["whole"][key] - results["tiled"][key])))
        for key in ("probability", "saliency_grid")
    }
    print(f"max |whole - tiled|: {difference}")
    if _OUT_DIR.value:
        out = pathlib.Path(_OUT_DIR.value)
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(out / "mosaic.png")
        predict.write_overlay(
            out / "mosaic_saliency.png", pixels, results["tiled"], 0, model.geometry
        )
        print(f"wrote {out / 'mosaic.png'} and {out / 'mosaic_saliency.png'}")


if __name__ == "__main__":
    app.run(main)
