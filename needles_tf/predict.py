r"""Classify your own images and slides, and show where the needle is.

    python -m needles_tf.predict --model=MODEL [--out_dir=DIR] [--json] \
        [--tile_size=1024] IMAGE|SLIDE|DIRECTORY|LIST.txt ...
    python -m needles_tf.predict --model=MODEL --out_dir=DIR --shard=0/4 slides/

MODEL is a packaged model's name (e.g. nmnist_canvas256, needles_tf.packaged: its
SavedModel), a SavedModel directory (RUN/saved_model/1) or a .keras file
(RUN/model.keras), both written by needles_tf.export. IMAGEs are PNG, JPEG or
TIFF files, grey or colour, 8 or 16 bits, up to --max_pixels (2^28 by default;
the size in the header is checked before decoding). Colour images given to a
grey model are averaged to grey, grey ones given to a colour model repeated to
three channels, as in training. Prints the probability
of every class (a table, or JSON with --json) and the position of maximum
saliency; with --out_dir, writes IMAGE_saliency.png: the saliency of the most
probable class over the image, at the image's size, with the receptive-field
window of the maximum outlined in cyan (and ringed, in images much larger than it).

Images with a side longer than --tile_size are processed in tiles that overlap
by the receptive field (needles_tf/localization/tiling.py) and pooled as a
whole, which gives whole-image results for models whose grid cells depend on
their window alone (batch normalization); with instance normalization a
warning says the result is approximate.

Slides (.svs, .ndpi, .scn, .bif and tiled TIFFs) are read region by region at
--level or --mpp, glass skipped by a tissue mask of the thumbnail, and written as
SLIDE_heatmap.tif (pyramidal), SLIDE_thumbnail.png and SLIDE.json with the top
regions in level-0 pixels (needles_tf/slides/). A directory stands for its images
and slides, a .txt file for the paths it lists; --shard splits them across
processes, and --out_dir gets predictions.csv (needles_tf/cohort.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
import tifffile
from absl import app, flags, logging
from PIL import Image, ImageOps

from needles_tf import cohort, packaged
from needles_tf.atomic import atomic_path
from needles_tf.cli import define_flags, one_line_usage_errors
from needles_tf.grid import cell_centre
from needles_tf.localization.streaming import StreamingModel, stream_image
from needles_tf.localization.upsample import saliency_to_input
from needles_tf.metadata import read_metadata
from needles_tf.plots import outline, saliency_overlay
from needles_tf.slides.inference import predict_slide
from needles_tf.slides.reader import is_slide

TIFF_SUFFIXES = (".tif", ".tiff")
# 16384²: 3 GB as float32 RGB. Larger images need --max_pixels (slides: see the README).
MAX_PIXELS = 2**28
WINDOW_COLOUR = (0, 255, 255)


@dataclasses.dataclass
class ExportedModel:
    """An exported model, run tile by tile (needles_tf/localization/streaming.py)."""

    streaming: StreamingModel
    metadata: dict

    @property
    def config(self) -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(self.metadata["model"])

    @property
    def geometry(self) -> tuple[int, int]:
        return int(self.metadata["receptive_field"]), int(self.metadata["stride"])


def load_exported(model: str | os.PathLike, strategy: str | None = None) -> ExportedModel:
    """A SavedModel directory or .keras file written by needles_tf.export, or a packaged
    model (its name or folder: its SavedModel). With `strategy` (needles_tf.training.distribute:
    auto, mirrored...), loaded under it, each batch of tiles split across its replicas."""
    path = packaged.resolve(str(model))
    if (path / packaged.SAVED_MODEL_VERSION / "saved_model.pb").exists():  # a packaged folder
        path = path / packaged.SAVED_MODEL_VERSION
    metadata = read_metadata(path)
    scope, replicate = contextlib.nullcontext(), None
    if strategy is not None:
        from needles_tf.training import distribute

        chosen = distribute.make_strategy(strategy)
        scope = chosen.scope()
        replicate = functools.partial(distribute.replicated, strategy=chosen)
    with scope:
        if path.is_dir():
            import tensorflow as tf  # SavedModels are TensorFlow's; .keras files need no TF

            loaded = tf.saved_model.load(str(path))
            if not hasattr(loaded, "tile_state"):
                raise ValueError(
                    f"{path}: exported by an older needles_tf, without the signatures that "
                    "process an image tile by tile; export the run again (python -m "
                    "needles_tf.export --model_dir=RUN) or give its model.keras."
                )
            streaming = StreamingModel.from_saved_model(loaded)
        else:
            import keras

            streaming = StreamingModel.from_keras(keras.saving.load_model(path, compile=False))
    if replicate is not None:
        streaming = dataclasses.replace(
            streaming, tile_pass=replicate(lambda x: streaming.tile_state(streaming.embed(x)))
        )
    return ExportedModel(streaming, metadata)


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """PNG, JPEG or TIFF -> (H, W, 1 or 3) float32 in [0, 255]; 16-bit values are scaled.

    The size in the file's header is checked against `max_pixels` before any pixel
    is decoded, so a decompression bomb is refused instead of filling the memory.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file.")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes); expected a PNG, JPEG or TIFF image.")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tiff:
                page = tiff.pages[0]  # level 0 of a pyramid
                _check_size(path, page.imagewidth, page.imagelength, max_pixels)
                pixels = page.asarray()
        else:
            limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # checked against max_pixels below instead
            try:
                with Image.open(path) as image:
                    _check_size(path, image.width, image.height, max_pixels)
                    # As the camera held it: a phone photo's pixels are stored sideways
                    # with an EXIF Orientation tag that viewers apply.
                    image = ImageOps.exif_transpose(image)
                    if image.mode in ("P", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                        image = image.convert("RGB")
                    elif image.mode == "LA":
                        image = image.convert("L")
                    pixels = np.asarray(image)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
    except (OSError, ValueError, tifffile.TiffFileError) as error:
        if isinstance(error, ImageTooLarge):
            raise
        raise ValueError(f"{path}: not a readable PNG, JPEG or TIFF image ({error}).") from error
    return _to_model_range(pixels, path)


class ImageTooLarge(ValueError):
    """An image whose header declares more pixels than --max_pixels allows."""


def _check_size(path: pathlib.Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{path}: {width}x{height} pixels ({width * height / 1e6:,.0f} MP) is more than "
            f"--max_pixels={max_pixels} ({max_pixels / 1e6:,.0f} MP); raise --max_pixels to "
            "read it (it takes 12 bytes a pixel in memory)."
        )


def _to_model_range(pixels: np.ndarray, path: pathlib.Path) -> np.ndarray:
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{path}: pixel array of shape {pixels.shape}; expected (height, width) or "
            "(height, width, 1, 3 or 4 channels)."
        )
    pixels = pixels[..., :3]  # drop alpha
    scale = {np.dtype(np.uint8): 1.0, np.dtype(np.uint16): 1.0 / 257.0, np.dtype(bool): 255.0}
    if pixels.dtype not in scale:
        raise ValueError(f"{path}: {pixels.dtype} pixels; expected 8- or 16-bit unsigned integers.")
    return pixels.astype(np.float32) * scale[pixels.dtype]


def predict_image(
    model: ExportedModel, image: np.ndarray, tile_size: int, progress: bool = False
) -> dict[str, Any]:
    """Probabilities (K,), the saliency grid (h, w, K) and the tile count of one image."""
    return stream_image(model.streaming, image, tile_size, *model.geometry, progress)


def maximum_saliency(saliency_grid: np.ndarray, class_index: int, geometry) -> dict[str, Any]:
    """Where the raw saliency of a class peaks: its grid cell, window and window centre."""
    receptive_field, stride = geometry
    plane = saliency_grid[..., class_index]
    row, column = np.unravel_index(int(np.argmax(plane)), plane.shape)
    top, left = int(row) * stride, int(column) * stride
    return {
        "x": cell_centre(int(column), receptive_field, stride),
        "y": cell_centre(int(row), receptive_field, stride),
        "window": [top, left, top + receptive_field, left + receptive_field],  # y0, x0, y1, x1
        "value": float(plane[row, column]),
    }


def write_overlay(
    path: pathlib.Path, image: np.ndarray, result: dict[str, Any], class_index: int, geometry
) -> None:
    """The class's saliency at the image's size over the image, its peak window outlined."""
    receptive_field, stride = geometry
    height, width = image.shape[:2]
    unit = result["saliency_unit"][None, ..., class_index : class_index + 1]
    saliency = saliency_to_input(unit, height, width, receptive_field, stride)
    saliency = np.asarray(saliency)[0, ..., 0]
    overlay = saliency_overlay(image.round().astype(np.uint8), saliency)
    y0, x0, y1, x1 = result["peak"]["window"]
    outline(overlay, y0, x0, y1, x1, WINDOW_COLOUR, thickness=max(1, receptive_field // 16))
    if min(height, width) > 8 * receptive_field:  # a window lost in a large image: ring it
        margin = max(receptive_field, min(height, width) // 32)
        thickness = max(1, min(height, width) // 512)
        outline(
            overlay, y0 - margin, x0 - margin, y1 + margin, x1 + margin, WINDOW_COLOUR, thickness
        )
    with atomic_path(path) as temporary:
        Image.fromarray(overlay).save(temporary, format="PNG")


def predict_files(
    model: ExportedModel,
    images: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike | None = None,
    tile_size: int = 1024,
    progress: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> list[dict[str, Any]]:
    """One record per image: its probabilities, peak saliency and overlay path."""
    receptive_field, _ = model.geometry
    if tile_size < receptive_field:
        raise ValueError(
            f"--tile_size={tile_size}: expected at least the model's receptive field "
            f"({receptive_field} pixels)."
        )
    names = model.metadata["class_names"]
    exact_tiling = bool(model.metadata.get("local_cells", False))
    if out_dir is not None:
        out_dir = pathlib.Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    records, used = [], set()
    for image_path in images:
        image = read_image(image_path, max_pixels)
        result = predict_image(model, image, tile_size, progress)
        if result["tiles"] > 1 and not exact_tiling:
            logging.warning(
                "%s: %d tiles, but this model normalizes over the whole input (instance "
                "normalization), so tiled results approximate whole-image ones; raise "
                "--tile_size to %d to process it in one piece.",
                image_path,
                result["tiles"],
                max(image.shape[:2]),
            )
        best = int(np.argmax(result["probability"]))
        result["peak"] = maximum_saliency(result["saliency_grid"], best, model.geometry)
        record = {
            "image": str(image_path),
            "height": image.shape[0],
            "width": image.shape[1],
            "tiles": result["tiles"],
            "probability": dict(zip(names, map(float, result["probability"]), strict=True)),
            "max_saliency": {"class": names[best], **result["peak"]},
        }
        if out_dir is not None:
            overlay = out_dir / _unique(f"{pathlib.Path(image_path).stem}_saliency.png", used)
            write_overlay(overlay, image, result, best, model.geometry)
            record["overlay"] = str(overlay)
        records.append(record)
    return records


def _unique(name: str, used: set[str]) -> str:
    """`name`, or name_2, name_3... when an earlier image of this run had the same stem."""
    stem, suffix = name.rsplit(".", 1)
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}_{n}.{suffix}"
    used.add(candidate)
    return candidate


def format_table(records: list[dict[str, Any]]) -> str:
    names = list(records[0]["probability"]) if records else []
    width = max([len("image"), *(len(r["image"]) for r in records)])
    header = f"{'image':<{width}}  {'size':>11}  {'tiles':>5}" + "".join(
        f"  {'p(' + n + ')':>12}" for n in names
    )
    lines = [header + "  max saliency (x, y)"]
    for r in records:
        peak = r["max_saliency"]
        lines.append(
            f"{r['image']:<{width}}  {r['width']:>5}x{r['height']:<5}  {r['tiles']:>5}"
            + "".join(f"  {r['probability'][n]:>12.4f}" for n in names)
            + f"  ({peak['x']:.0f}, {peak['y']:.0f})"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if not argv[1:]:
        raise app.UsageError("Expected images, slides, directories or list files after the flags.")
    FLAGS = flags.FLAGS
    for name in ("tile_size", "max_pixels", "top_k", "batch_size"):
        if FLAGS[name].value < 1:
            raise app.UsageError(f"--{name}={FLAGS[name].value}: expected a positive number.")
    if FLAGS.level is not None and FLAGS.level < 0:
        raise app.UsageError(f"--level={FLAGS.level}: expected a pyramid level, 0 or more.")
    if FLAGS.mpp is not None and FLAGS.mpp <= 0:
        raise app.UsageError(f"--mpp={FLAGS.mpp}: expected microns per pixel, above 0.")
    if FLAGS.tissue_threshold is not None and not 0 < FLAGS.tissue_threshold <= 1:
        raise app.UsageError(
            f"--tissue_threshold={FLAGS.tissue_threshold}: expected a grey level in (0, 1]."
        )
    try:
        paths = cohort.take_shard(cohort.expand(argv[1:]), FLAGS.shard)
        model = load_exported(FLAGS.model, FLAGS.strategy)
        records = []
        for path in paths:
            if is_slide(path):
                records.append(
                    predict_slide(
                        model, path, FLAGS.out_dir, FLAGS.tile_size, FLAGS.level, FLAGS.mpp,
                        FLAGS.tissue_threshold, FLAGS.top_k, FLAGS.batch_size,
                        progress=not FLAGS.json,
                    )
                )  # fmt: skip
            else:
                records += predict_files(
                    model, [path], FLAGS.out_dir, FLAGS.tile_size,
                    progress=not FLAGS.json, max_pixels=FLAGS.max_pixels,
                )  # fmt: skip
        if FLAGS.out_dir is not None and records:
            csv_path = cohort.write_results(FLAGS.out_dir, records, FLAGS.shard)
            logging.info("Wrote %s", csv_path)
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from error
    print(json.dumps(records, indent=2) if FLAGS.json else format_table(records))


if __name__ == "__main__":
    define_flags("model", required=True)
    flags.DEFINE_string(
        "out_dir", None, "Write overlays (images), heatmaps, thumbnails and JSON (slides), "
        "and predictions.csv here.",
    )  # fmt: skip
    flags.DEFINE_bool("json", False, "Print JSON instead of a table.")
    flags.DEFINE_integer("tile_size", 1024, "Largest tile side in pixels; larger images are tiled.")
    flags.DEFINE_integer(
        "max_pixels", MAX_PIXELS, "Refuse images whose header declares more pixels than this."
    )
    flags.DEFINE_integer("level", None, "Slides: the pyramid level to read (default 0).")
    flags.DEFINE_float("mpp", None, "Slides: microns per pixel to read at (or --level).")
    flags.DEFINE_float(
        "tissue_threshold", None, "Slides: grey level (0-1) below which a thumbnail pixel is "
        "tissue (default: Otsu's threshold).",
    )  # fmt: skip
    flags.DEFINE_integer("top_k", 5, "Slides: how many top regions to report.")
    flags.DEFINE_integer("batch_size", 1, "Slides: tiles per model call (memory grows with it).")
    flags.DEFINE_string("shard", "", "i/n: only every n-th input from the i-th (from 0).")
    flags.DEFINE_string(
        "strategy", None, "tf.distribute strategy for tiles (auto: all local GPUs when there "
        "are several; mirrored, one_device); default: none.",
    )  # fmt: skip
    app.run(one_line_usage_errors(main))
