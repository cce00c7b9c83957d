"""Whole-slide images through tiffslide: pyramid levels, regions, the tissue test.

tiffslide reads tiled pyramidal TIFFs (CAMELYON's format) with tifffile and
zarr, region by region, from local paths or any fsspec URL (gs://, s3://),
which Beam workers need; it has no native library to install.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tiffslide

TISSUE_GREEN = 200.0  # Pawlowski et al., App. A.2: tissue if the mean green value is below this


class SlideError(ValueError):
    """A slide that cannot be read; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Level:
    """A pyramid level: index, (height, width) and downsample from level 0."""

    index: int
    shape: tuple[int, int]
    downsample: float


def open_slide(path) -> tiffslide.TiffSlide:
    """The slide at `path` (a context manager), its pyramid already parsed."""
    try:
        slide = tiffslide.TiffSlide(str(path))
        _ = slide.level_dimensions  # tiffslide parses lazily: fail here, not later
        return slide
    except Exception as error:  # tifffile, zarr and fsspec raise many types
        raise SlideError(f"{path}: not a readable whole-slide TIFF ({error}).") from error


def level_of(slide: tiffslide.TiffSlide, index: int, path) -> Level:
    """Level `index` of `slide`, or SlideError when the pyramid has fewer levels."""
    if index >= slide.level_count:
        raise SlideError(
            f"{path}: {slide.level_count} pyramid level(s); nCAMELYON reads level {index}."
        )
    width, height = slide.level_dimensions[index]
    return Level(index, (int(height), int(width)), float(slide.level_downsamples[index]))


def read_crop(
    slide: tiffslide.TiffSlide, level: Level, top: int, left: int, size: int, path
) -> np.ndarray:
    """(size, size, 3) uint8 RGB of the level's pixels [top, top + size) x [left, left + size)."""
    location = (round(left * level.downsample), round(top * level.downsample))
    try:
        region = slide.read_region(location, level.index, (size, size), as_array=True)
    except Exception as error:
        raise SlideError(
            f"{path}: reading a {size}² region at {location} failed ({error})."
        ) from error
    region = np.asarray(region)
    if region.ndim == 2:
        region = np.repeat(region[..., None], 3, axis=-1)
    return np.ascontiguousarray(region[..., :3], dtype=np.uint8)


def is_tissue(crop: np.ndarray) -> bool:
    """Mostly tissue, not glass: mean green value below 200 (Pawlowski et al. 2019 App. A.2)."""
    return float(crop[..., 1].mean()) < TISSUE_GREEN
