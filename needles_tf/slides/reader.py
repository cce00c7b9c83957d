"""Whole-slide images region by region: a pyramid level or a resolution, and a tissue mask.

tiffslide reads the tiled pyramidal TIFFs of scanners (.svs, .ndpi, .scn, .bif,
generic .tif) with tifffile, one region at a time, with no native library to
install. Other images (PNG, JPEG, untiled TIFF) are read whole, up to --max_pixels.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib

import numpy as np
import tiffslide
from PIL import Image
from skimage.color import rgb2gray
from skimage.filters import threshold_otsu

# Formats tiffslide reads as slides; any TIFF with a pyramid is one too.
SLIDE_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif", ".tif", ".tiff")
GLASS_GREY = 0.8  # grey level (0 to 1) above which an unstained pixel is glass
THUMBNAIL_SIDE = 2048  # pixels: the tissue mask and the overlay are computed at this size
THUMBNAIL_BAND = 1024  # rows of the level read at a time for the thumbnail


class SlideError(ValueError):
    """A slide that cannot be read as asked; the message names the file and the flag."""


@dataclasses.dataclass(frozen=True)
class Resolution:
    """Where pixels are read from: pyramid `level`, scaled by `scale` (1: as stored)."""

    level: int
    level_downsample: float  # of that level, from level 0
    scale: float  # level pixels per output pixel, >= 1

    @property
    def downsample(self) -> float:
        """Level-0 pixels per output pixel."""
        return self.level_downsample * self.scale


def is_slide(path: str | os.PathLike) -> bool:
    """A whole-slide format, or a TIFF that is tiled (read region by region)."""
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix not in SLIDE_SUFFIXES:
        return False
    if suffix not in (".tif", ".tiff"):
        return True
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            return tiff.pages[0].is_tiled
    except (OSError, tifffile.TiffFileError):
        return False


class Slide:
    """A slide read at one resolution: `shape` (height, width) of that resolution,
    `read(top, left, height, width)` -> (height, width, 3) uint8 RGB."""

    def __init__(self, path: str | os.PathLike, level: int | None = None, mpp: float | None = None):
        self.path = pathlib.Path(path)
        try:
            self._slide = tiffslide.TiffSlide(str(self.path))
            dimensions = self._slide.level_dimensions  # parsed lazily: fail here, not later
        except Exception as error:  # tifffile, zarr and fsspec raise many types
            raise SlideError(f"{self.path}: not a readable slide ({error}).") from error
        self.level_shapes = [(int(h), int(w)) for w, h in dimensions]
        self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
        self.base_mpp = _base_mpp(self._slide.properties)
        self.resolution = self._resolution(level, mpp)
        height, width = self.level_shapes[self.resolution.level]
        self.shape = (int(height / self.resolution.scale), int(width / self.resolution.scale))

    def _resolution(self, level: int | None, mpp: float | None) -> Resolution:
        if level is not None and mpp is not None:
            raise SlideError("--level and --mpp: give one of the two.")
        if mpp is not None:
            if self.base_mpp is None:
                raise SlideError(
                    f"{self.path}: --mpp={mpp}, but the slide does not record its microns "
                    "per pixel; use --level."
                )
            wanted = mpp / self.base_mpp  # level-0 pixels per output pixel
            if wanted < 1 - 1e-3:
                raise SlideError(
                    f"{self.path}: --mpp={mpp} is finer than the scan ({self.base_mpp:.4g} "
                    "microns per pixel); expected at least that."
                )
            # The coarsest level at least as fine as wanted, then scaled down to it.
            index = max(i for i, d in enumerate(self.level_downsamples) if d <= wanted * 1.001)
            downsample = self.level_downsamples[index]
            return Resolution(index, downsample, max(1.0, wanted / downsample))
        index = 0 if level is None else level
        if not 0 <= index < len(self.level_shapes):
            raise SlideError(
                f"{self.path}: --level={index}, but the slide has levels 0 to "
                f"{len(self.level_shapes) - 1}."
            )
        return Resolution(index, self.level_downsamples[index], 1.0)

    @property
    def mpp(self) -> float | None:
        """Microns per pixel at the resolution read, where the slide records it."""
        return None if self.base_mpp is None else self.base_mpp * self.resolution.downsample

    def read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """(height, width, 3) uint8 RGB at the resolution read, from its pixel (top, left)."""
        resolution = self.resolution
        scale = resolution.scale
        size = (math.ceil(width * scale), math.ceil(height * scale))  # at the level
        location = (
            round(left * resolution.downsample),
            round(top * resolution.downsample),
        )  # level 0
        try:
            region = self._slide.read_region(location, resolution.level, size, as_array=True)
        except Exception as error:
            raise SlideError(
                f"{self.path}: reading {size[0]}x{size[1]} pixels at {location} failed ({error})."
            ) from error
        region = _rgb(np.asarray(region))
        if scale != 1.0:
            region = np.asarray(Image.fromarray(region).resize((width, height), Image.BILINEAR))
        return region[:height, :width]

    def thumbnail(self, side: int = THUMBNAIL_SIDE) -> np.ndarray:
        """The slide at most `side` pixels on its longer side, (h, w, 3) uint8 RGB.

        Read from the coarsest level that has at least those pixels, in bands of rows,
        each shrunk as it comes: tiffslide's get_thumbnail reads that level whole (level
        0 of a slide without a level near the thumbnail's size: 3 GB for 32,768²)."""
        height, width = self.shape
        factor = max(height, width) / side
        size = (max(1, round(width / factor)), max(1, round(height / factor)))  # (w, h)
        fits = [i for i, (h, w) in enumerate(self.level_shapes) if h >= size[1] and w >= size[0]]
        level = max(fits) if fits else 0
        level_height, level_width = self.level_shapes[level]
        downsample = self.level_downsamples[level]
        thumbnail = np.empty((size[1], size[0], 3), np.uint8)
        for top in range(0, level_height, THUMBNAIL_BAND):
            bottom = min(top + THUMBNAIL_BAND, level_height)
            first, last = (round(row * size[1] / level_height) for row in (top, bottom))
            if last == first:
                continue
            location = (0, round(top * downsample))
            band = self._slide.read_region(
                location, level, (level_width, bottom - top), as_array=True
            )
            shrunk = Image.fromarray(_rgb(np.asarray(band))).resize(
                (size[0], last - first), Image.BOX
            )
            thumbnail[first:last] = np.asarray(shrunk)
        return thumbnail

    def close(self) -> None:
        self._slide.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _rgb(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    if pixels.dtype != np.uint8:
        pixels = (pixels / (257.0 if pixels.dtype == np.uint16 else 1.0)).astype(np.uint8)
    return np.ascontiguousarray(pixels[..., :3])


def _base_mpp(properties: dict) -> float | None:
    value = properties.get("tiffslide.mpp-x")
    try:
        return float(value) if value else None
    except (TypeError, ValueError):
        return None


def tissue_mask(thumbnail: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """(h, w) bool: tissue, not glass. Glass is bright and grey; tissue is darker or
    stained. A pixel is tissue where its grey level (0 to 1) is below `threshold` or its
    saturation is above 0.1. By default the threshold is Otsu's, between the glass and
    tissue of the thumbnail, but never below GLASS_GREY: a slide without glass (Otsu
    then splits the tissue) is all tissue."""
    grey = rgb2gray(thumbnail) if thumbnail.shape[-1] == 3 else thumbnail[..., 0] / 255.0
    if threshold is None:
        threshold = max(threshold_otsu(grey), GLASS_GREY) if np.ptp(grey) > 0 else GLASS_GREY
    rgb = thumbnail.astype(np.float32)
    top, bottom = rgb.max(axis=-1), rgb.min(axis=-1)
    saturation = np.where(top > 0, (top - bottom) / np.maximum(top, 1.0), 0.0)
    return (grey < threshold) | (saturation > 0.1)
