"""A slide's saliency on disk: written tile by tile, read back in bands, saved as a
tiled pyramidal TIFF that QuPath, ASAP and OpenSlide open.

Nothing here holds a whole map: `GridStore` keeps the per-cell maps of the slide's
grid in a raw float32 file (written at byte offsets as tiles finish), and the
pyramid is made level by level from raw files, a band of rows at a time.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Iterator

import numpy as np
import tifffile

TIFF_TILE = 256  # pixels of the heatmap's tiles and of its smallest level


class RawGrid:
    """A (height, width, channels) array in a raw file, written and read in pieces."""

    def __init__(self, path: pathlib.Path, shape: tuple[int, int, int], dtype) -> None:
        self.path, self.shape, self.dtype = path, shape, np.dtype(dtype)
        self._row_bytes = shape[1] * shape[2] * self.dtype.itemsize
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self._fd, shape[0] * self._row_bytes)  # sparse: zeros until written

    def write(self, top: int, left: int, values: np.ndarray) -> None:
        """values (rows, columns, channels) at cell (top, left)."""
        values = np.ascontiguousarray(values, self.dtype)
        offset = left * self.shape[2] * self.dtype.itemsize
        for row in range(values.shape[0]):
            os.pwrite(self._fd, values[row].tobytes(), (top + row) * self._row_bytes + offset)

    def read_rows(self, top: int, rows: int) -> np.ndarray:
        rows = min(rows, self.shape[0] - top)
        data = os.pread(self._fd, rows * self._row_bytes, top * self._row_bytes)
        return np.frombuffer(data, self.dtype).reshape(rows, *self.shape[1:])

    def bands(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        for top in range(0, self.shape[0], rows):
            yield top, self.read_rows(top, rows)

    def close(self) -> None:
        os.close(self._fd)


def halve(band: np.ndarray) -> np.ndarray:
    """2x2 means of a (rows, columns, K) uint8 band; an odd last row or column kept."""
    rows, columns = band.shape[:2]
    padded = np.pad(band.astype(np.float32), ((0, rows % 2), (0, columns % 2), (0, 0)), "edge")
    halved = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2, -1).mean((1, 3))
    return np.round(halved).astype(np.uint8)


def pyramid(level0: RawGrid, folder: pathlib.Path) -> list[RawGrid]:
    """Level 0 and its halvings down to one TIFF tile, each a raw uint8 file in `folder`."""
    levels = [level0]
    while max(levels[-1].shape[:2]) > TIFF_TILE:
        previous = levels[-1]
        height, width, channels = previous.shape
        shape = ((height + 1) // 2, (width + 1) // 2, channels)
        level = RawGrid(folder / f"level{len(levels)}.raw", shape, np.uint8)
        for top, band in previous.bands(2 * TIFF_TILE):
            level.write(top // 2, 0, halve(band))
        levels.append(level)
    return levels


def _tiles(level: RawGrid) -> Iterator[np.ndarray]:
    """The level's TIFF tiles, row by row, edge tiles padded with zeros."""
    _, width, channels = level.shape
    for _, band in level.bands(TIFF_TILE):
        padded = np.zeros((TIFF_TILE, -(-width // TIFF_TILE) * TIFF_TILE, channels), np.uint8)
        padded[: band.shape[0], :width] = band
        for left in range(0, width, TIFF_TILE):
            tile = padded[:, left : left + TIFF_TILE]
            yield tile[..., 0] if channels == 1 else tile


def write_pyramid_tiff(
    path: pathlib.Path, levels: list[RawGrid], microns_per_pixel: float | None
) -> None:
    """A BigTIFF with one tiled page per level (OpenSlide's generic tiled TIFF layout),
    deflate-compressed uint8, with the resolution of each level where it is known."""
    with tifffile.TiffWriter(path, bigtiff=True) as tiff:
        for index, level in enumerate(levels):
            height, width, channels = level.shape
            resolution = {}
            if microns_per_pixel:
                per_cm = 1e4 / (microns_per_pixel * 2**index)
                resolution = {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}
            tiff.write(
                _tiles(level),
                shape=(height, width) if channels == 1 else (height, width, channels),
                dtype=np.uint8,
                tile=(TIFF_TILE, TIFF_TILE),
                photometric="minisblack",
                planarconfig="contig" if channels > 1 else None,
                compression="zlib",
                subfiletype=0 if index == 0 else 1,
                **resolution,
            )


class HeatmapWriter:
    """Per-cell maps in, a pyramidal heatmap TIFF out, in bounded memory.

    `add(cells, maps, tissue)` stores a tile's raw maps and which of its cells are
    tissue; `finish(unit, on_band)` turns them, a band at a time, into [0, 1] maps by
    `unit(band)` (the model's served maps, given the final pooling state), scaled to
    uint8, zero on glass and where no tile was read, and hands each band to `on_band`.
    """

    def __init__(self, grid_shape: tuple[int, int], folder: pathlib.Path):
        self._folder = pathlib.Path(tempfile.mkdtemp(prefix=".heatmap-", dir=folder))
        self.grid_shape = grid_shape
        self._maps: RawGrid | None = None  # made at the first tile, whose maps give M

    def add(self, cells: tuple[slice, slice], maps: np.ndarray, tissue: np.ndarray) -> None:
        """A tile's (h, w, M) maps at its grid `cells`; `tissue` (h, w) bool: the cells
        to show (the rest, glass, stays zero)."""
        if self._maps is None:
            shape = (*self.grid_shape, maps.shape[-1] + 1)
            self._maps = RawGrid(self._folder / "maps.raw", shape, np.float32)
        shown = tissue[..., None].astype(np.float32)
        self._maps.write(cells[0].start, cells[1].start, np.concatenate([maps, shown], axis=-1))

    def finish(
        self,
        path: pathlib.Path,
        unit: Callable[[np.ndarray], np.ndarray],
        on_band: Callable[[int, np.ndarray], None],
        microns_per_pixel: float | None,
    ) -> None:
        """Writes the pyramid to `path` (which must be a temporary name: renamed by the caller)."""
        level0 = None
        for top, band in self._maps.bands(TIFF_TILE):
            values = unit(band[..., :-1]) * (band[..., -1:] > 0)
            on_band(top, values)
            if level0 is None:
                shape = (*self.grid_shape, values.shape[-1])
                level0 = RawGrid(self._folder / "level0.raw", shape, np.uint8)
            level0.write(top, 0, np.round(np.clip(values, 0, 1) * 255).astype(np.uint8))
        levels = pyramid(level0, self._folder)
        write_pyramid_tiff(path, levels, microns_per_pixel)
        self.levels = [level.shape for level in levels]
        self._coarsest = levels[-1].read_rows(0, levels[-1].shape[0]).copy()
        for level in levels:
            level.close()

    @property
    def coarsest(self) -> np.ndarray:
        """The smallest level, (h, w, K) uint8, for thumbnails."""
        return self._coarsest

    def close(self) -> None:
        """Removes the raw files."""
        if self._maps is not None:
            self._maps.close()
        shutil.rmtree(self._folder, ignore_errors=True)
