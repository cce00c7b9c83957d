"""A whole slide through a model in bounded memory: tissue tiles read ahead, streamed,
and the heatmap, thumbnail and top regions written as they are finished.

Memory does not grow with the slide: the pooling state is a few numbers per class
(needles_tf/localization/streaming.py), the maps go to disk tile by tile and come
back in bands (needles_tf/slides/heatmap.py), and the reader keeps a few batches of
tiles ahead of the model in a thread.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import pathlib
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import keras
import numpy as np
from PIL import Image
from skimage.feature import peak_local_max

from needles_tf.atomic import atomic_path
from needles_tf.grid import cell_centre
from needles_tf.localization.streaming import PooledStream, same_size_batches
from needles_tf.localization.tiling import Tile, tiles
from needles_tf.plots import outline, saliency_overlay
from needles_tf.slides.heatmap import HeatmapWriter
from needles_tf.slides.reader import Slide, SlideError, tissue_mask

REGION_COLOUR = (0, 255, 255)
READ_AHEAD = 2  # batches of tiles read while the model runs


def tissue_tiles(tile_list: list[Tile], mask: np.ndarray, shape: tuple[int, int]) -> list[Tile]:
    """The tiles whose footprint on the (h, w) tissue mask of a `shape` slide holds tissue."""
    scale_y, scale_x = mask.shape[0] / shape[0], mask.shape[1] / shape[1]
    kept = []
    for tile in tile_list:
        top, bottom = int(tile.rows.start * scale_y), math.ceil(tile.rows.stop * scale_y)
        left, right = int(tile.columns.start * scale_x), math.ceil(tile.columns.stop * scale_x)
        if mask[top : max(bottom, top + 1), left : max(right, left + 1)].any():
            kept.append(tile)
    return kept


def cell_tissue(
    tile: Tile, mask: np.ndarray, shape: tuple[int, int], receptive_field: int, stride: int
) -> np.ndarray:
    """(cells_y, cells_x) bool: whether the centre of each of the tile's grid cells'
    windows lies on tissue in the (h, w) mask of a `shape` slide."""
    rows = cell_centre(np.arange(tile.rows.cells) + tile.rows.first_cell, receptive_field, stride)
    columns = cell_centre(
        np.arange(tile.columns.cells) + tile.columns.first_cell, receptive_field, stride
    )
    y = np.minimum((rows * mask.shape[0] / shape[0]).astype(int), mask.shape[0] - 1)
    x = np.minimum((columns * mask.shape[1] / shape[1]).astype(int), mask.shape[1] - 1)
    return mask[y[:, None], x[None, :]]


def read_ahead(slide: Slide, batches: Iterable[list[Tile]]) -> Iterator[tuple[list, np.ndarray]]:
    """(batch, its pixels as float32) with up to READ_AHEAD batches decoded in advance."""

    def read(batch: list[Tile]) -> np.ndarray:
        regions = [slide.read(t.rows.start, t.columns.start, *t.shape) for t in batch]
        return np.stack(regions).astype(np.float32)

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending: list = []
        for batch in batches:
            pending.append((batch, pool.submit(read, batch)))
            if len(pending) > READ_AHEAD:
                done, future = pending.pop(0)
                yield done, future.result()
        for done, future in pending:
            yield done, future.result()


class TopRegions:
    """The k highest local maxima of a map that arrives in bands of rows."""

    def __init__(self, k: int, min_distance: int):
        self.k, self.min_distance = k, max(1, min_distance)
        self.candidates: list[tuple[float, int, int]] = []

    def add(self, top: int, plane: np.ndarray) -> None:
        peaks = peak_local_max(
            plane, min_distance=self.min_distance, threshold_abs=1e-6,
            num_peaks=self.k, exclude_border=False,
        )  # fmt: skip
        self.candidates += [(float(plane[r, c]), top + int(r), int(c)) for r, c in peaks]

    def best(self) -> list[tuple[float, int, int]]:
        """(score, row, column), highest first, no two closer than min_distance cells."""
        chosen: list[tuple[float, int, int]] = []
        for score, row, column in sorted(self.candidates, reverse=True):
            if all(max(abs(row - r), abs(column - c)) >= self.min_distance for _, r, c in chosen):
                chosen.append((score, row, column))
            if len(chosen) == self.k:
                break
        return chosen


def predict_slide(
    model,
    path: str | pathlib.Path,
    out_dir: str | pathlib.Path | None = None,
    tile_size: int = 1024,
    level: int | None = None,
    mpp: float | None = None,
    tissue_threshold: float | None = None,
    top_k: int = 5,
    batch_size: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """One slide's record: probabilities, top regions in level-0 pixels, output paths.

    `model` is a needles_tf.predict.ExportedModel. With `out_dir`, writes
    SLIDE_heatmap.tif (pyramidal, the served [0, 1] saliency as uint8 on the model's
    grid), SLIDE_thumbnail.png and SLIDE.json, all renamed into place at the end.
    """
    path = pathlib.Path(path)
    receptive_field, stride = model.geometry
    with Slide(path, level, mpp) as slide, tempfile.TemporaryDirectory() as scratch:
        tile_list, grid_shape = tiles(*slide.shape, tile_size, receptive_field, stride)
        thumbnail = slide.thumbnail()
        mask = tissue_mask(thumbnail, tissue_threshold)
        kept = tissue_tiles(tile_list, mask, slide.shape)
        if not kept:
            raise SlideError(
                f"{path}: no tissue found (--tissue_threshold={tissue_threshold}); "
                "expected a slide with tissue darker than its glass."
            )
        folder = pathlib.Path(out_dir or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        heatmap = HeatmapWriter(grid_shape, folder)  # raw files beside the outputs
        try:
            stream = PooledStream(model.streaming, receptive_field, stride)
            bar = keras.utils.Progbar(len(kept), unit_name="tile") if progress else None
            for batch, pixels in read_ahead(slide, same_size_batches(kept, batch_size)):
                maps = stream.add(batch, pixels)
                for tile, tile_maps in zip(batch, maps, strict=True):
                    tissue = cell_tissue(tile, mask, slide.shape, receptive_field, stride)
                    heatmap.add(tile.cells, tile_maps, tissue)
                if bar is not None:
                    bar.add(len(batch))
            probability = stream.finish()
            record = {
                "image": str(path),
                "height": slide.shape[0],
                "width": slide.shape[1],
                "level": slide.resolution.level,
                "downsample": slide.resolution.downsample,
                "mpp": slide.mpp,
                "tiles": len(tile_list),
                "tissue_tiles": len(kept),
                "probability": dict(
                    zip(model.metadata["class_names"], map(float, probability), strict=True)
                ),
            }
            _finish(record, stream, heatmap, slide, thumbnail, model, top_k, out_dir, scratch)
        finally:
            heatmap.close()
    return record


def _finish(record, stream, heatmap, slide, thumbnail, model, top_k, out_dir, scratch) -> None:
    """The heatmap's pyramid and the top regions from the merged state; with `out_dir`,
    the three outputs, renamed into place together (the JSON last)."""
    receptive_field, stride = model.geometry
    names = model.metadata["class_names"]
    best = names.index(max(record["probability"], key=record["probability"].get))
    downsample = slide.resolution.downsample
    regions = TopRegions(top_k, math.ceil(receptive_field / stride))
    with contextlib.ExitStack() as outputs:
        out = pathlib.Path(out_dir) if out_dir else None
        if out is not None:  # renamed in reverse order of entry: the JSON last
            json_path = outputs.enter_context(atomic_path(out / f"{slide.path.stem}.json"))
            tiff_path = outputs.enter_context(atomic_path(out / f"{slide.path.stem}_heatmap.tif"))
            png_path = outputs.enter_context(atomic_path(out / f"{slide.path.stem}_thumbnail.png"))
        else:
            tiff_path = pathlib.Path(scratch) / "heatmap.tif"
        heatmap.finish(
            tiff_path,
            unit=lambda band: stream.served(band)["saliency_unit"],
            on_band=lambda top, values: regions.add(top, values[..., best]),
            microns_per_pixel=None if slide.mpp is None else slide.mpp * stride,
        )
        top = [
            _region(score, row, column, receptive_field, stride, downsample)
            for score, row, column in regions.best()
        ]
        record["top_regions"] = {"class": names[best], "regions": top}
        record["max_saliency"] = _peak(top, downsample)
        if out is not None:
            record["heatmap"] = str(out / f"{slide.path.stem}_heatmap.tif")
            record["heatmap_levels"] = [list(shape[:2]) for shape in heatmap.levels]
            record["thumbnail"] = str(out / f"{slide.path.stem}_thumbnail.png")
            record["heatmap_geometry"] = _geometry(receptive_field, stride, downsample)
            _thumbnail(png_path, thumbnail, heatmap, best, top, slide, stride)
            json_path.write_text(json.dumps(record, indent=2))


def _region(score, row, column, receptive_field, stride, downsample) -> dict[str, Any]:
    """A grid cell's receptive-field window in level-0 pixels."""
    y0, x0 = row * stride * downsample, column * stride * downsample
    side = receptive_field * downsample
    return {"score": score, "x0": round(x0), "y0": round(y0),
            "x1": round(x0 + side), "y1": round(y0 + side)}  # fmt: skip


def _peak(top: list[dict], downsample: float) -> dict[str, Any]:
    """The best region as predict's `max_saliency` (at the resolution read)."""
    if not top:
        return {"x": float("nan"), "y": float("nan"), "value": 0.0}
    region = top[0]
    return {
        "x": (region["x0"] + region["x1"]) / 2 / downsample,
        "y": (region["y0"] + region["y1"]) / 2 / downsample,
        "value": region["score"],
    }


def _geometry(receptive_field: int, stride: int, downsample: float) -> dict[str, float]:
    """Where heatmap pixel (i, j) lies on the slide: level-0 window [s·i, s·i + r)."""
    return {"stride_level0": stride * downsample, "window_level0": receptive_field * downsample}


def _thumbnail(path, thumbnail, heatmap, best, top, slide, stride) -> None:
    """The coarsest heatmap level over the slide's thumbnail, the top regions outlined."""
    height, width = thumbnail.shape[:2]
    scale_y, scale_x = height / slide.shape[0], width / slide.shape[1]
    grid_h, grid_w = heatmap.grid_shape
    extent = (max(1, round(grid_w * stride * scale_x)), max(1, round(grid_h * stride * scale_y)))
    coarse = Image.fromarray(heatmap.coarsest[..., best]).resize(extent, Image.BILINEAR)
    saliency = np.zeros((height, width), np.float32)
    part = np.asarray(coarse, np.float32)[:height, :width] / 255.0
    saliency[: part.shape[0], : part.shape[1]] = part
    overlay = saliency_overlay(thumbnail, saliency)
    downsample = slide.resolution.downsample
    for region in top:
        outline(
            overlay,
            int(region["y0"] / downsample * scale_y) - 2,
            int(region["x0"] / downsample * scale_x) - 2,
            math.ceil(region["y1"] / downsample * scale_y) + 2,
            math.ceil(region["x1"] / downsample * scale_x) + 2,
            REGION_COLOUR,
            thickness=2,
        )
    Image.fromarray(overlay).save(path, format="PNG")
