r"""Whole-slide inference: megapixels/s, tiles/s and peak memory against slide size.

    python benchmarks/slide_inference.py --model=nmnist_canvas256 \
        --mnist_dir=PATH_TO_MNIST --sizes=8192,32768,65536 --workdir=/tmp/slides

Writes synthetic pyramidal slides (tiled BigTIFF, levels at downsample 1, 16 and 64,
0.25 microns per pixel) of each size: glass, and tissue in a few elliptic blobs
where MNIST test digits lie on a dark ground, one per 64-pixel cell at a random
offset, with --needles 3s planted at known places. Then runs `python -m
needles_tf.predict` on each in a process of its own and prints its wall time,
megapixels/s (of the whole slide and of the tissue read), tiles/s, the peak resident
memory of that process, and whether every planted needle is among the top regions.
Slides are generated once per --workdir and reused.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import tifffile
from absl import app, flags

from tfds_builders.nmnist import mnist_idx, synthesis

_MODEL = flags.DEFINE_string("model", "nmnist_canvas256", "A packaged name or exported model.")
_MNIST_DIR = flags.DEFINE_string("mnist_dir", None, "The four MNIST .gz files.", required=True)
_SIZES = flags.DEFINE_list("sizes", ["8192", "32768", "65536"], "Slide sides in pixels.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/slide_inference", "Slides and outputs go here.")
_NEEDLES = flags.DEFINE_integer("needles", 4, "3s planted per slide.")
_TILE_SIZE = flags.DEFINE_integer("tile_size", 1024, "predict's --tile_size.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 1, "predict's --batch_size.")
_SEED = flags.DEFINE_integer("seed", 0, "Slide layout.")

CELL = 64  # one digit per cell, at a random offset
TIFF_TILE = 512
DOWNSAMPLES = (16, 64)  # the reduced levels
MPP = 0.25
DIGIT = synthesis.DIGIT_SIZE
GLASS = 235


class SlideLayout:
    """Where tissue, digits and needles are on a side x side slide; pixels by region."""

    def __init__(self, side: int, needles: int, pool: synthesis.DigitPool, seed: int):
        self.side, self.pool, self.seed = side, pool, seed
        rng = np.random.default_rng(seed)
        self.blobs = [  # centre y, centre x, radius y, radius x, in pixels
            (*rng.uniform(0.25, 0.75, 2) * side, *rng.uniform(0.12, 0.28, 2) * side)
            for _ in range(3)
        ]
        cells = side // CELL
        self.needle_cells = set()
        while len(self.needle_cells) < needles:
            cell = tuple(int(v) for v in rng.integers(0, cells, 2))
            if self.is_tissue(np.array([cell[0] * CELL + CELL / 2]), np.array([cell[1] * CELL]))[0]:
                self.needle_cells.add(cell)

    def is_tissue(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        inside = np.zeros(np.broadcast(ys, xs).shape, bool)
        for cy, cx, ry, rx in self.blobs:
            inside |= ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
        return inside

    def needle_boxes(self) -> list[tuple[int, int, int, int]]:
        return [self._digit(row, col)[1] for row, col in sorted(self.needle_cells)]

    def _digit(self, row: int, col: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """The digit of cell (row, col) and its box (y0, x0, y1, x1), a pure function of both."""
        rng = np.random.default_rng((self.seed, row, col))
        dy, dx = rng.integers(0, CELL - DIGIT + 1, 2)
        if (row, col) in self.needle_cells:
            source = self.pool.needles[rng.integers(len(self.pool.needles))]
        else:
            source = self.pool.clutter[rng.integers(len(self.pool.clutter))]
        y0, x0 = row * CELL + int(dy), col * CELL + int(dx)
        return self.pool.images[source], (y0, x0, y0 + DIGIT, x0 + DIGIT)

    def region(self, top: int, left: int, size: int) -> np.ndarray:
        """(size, size, 3) uint8 RGB of level 0 from (top, left), a multiple of CELL."""
        ys = np.arange(top, top + size)[:, None] + 0.5
        xs = np.arange(left, left + size)[None, :] + 0.5
        tissue = self.is_tissue(ys, xs)
        grey = np.where(tissue, 0, GLASS).astype(np.uint8)
        for row in range(top // CELL, (top + size) // CELL):
            for col in range(left // CELL, (left + size) // CELL):
                if tissue[row * CELL - top + CELL // 2, col * CELL - left + CELL // 2]:
                    digit, (y0, x0, y1, x1) = self._digit(row, col)
                    grey[y0 - top : y1 - top, x0 - left : x1 - left] = digit
        return np.repeat(grey[..., None], 3, axis=-1)


def write_slide(path: pathlib.Path, layout: SlideLayout) -> None:
    """Level 0 tile by tile; the reduced levels gathered on the way (they are small)."""
    side = layout.side
    reduced = {d: np.zeros((side // d, side // d, 3), np.uint8) for d in DOWNSAMPLES}

    def tiles():
        for top in range(0, side, TIFF_TILE):
            for left in range(0, side, TIFF_TILE):
                tile = layout.region(top, left, TIFF_TILE)
                for d, level in reduced.items():
                    small = tile.reshape(TIFF_TILE // d, d, TIFF_TILE // d, d, 3).mean((1, 3))
                    level[
                        top // d : (top + TIFF_TILE) // d, left // d : (left + TIFF_TILE) // d
                    ] = small.round().astype(np.uint8)
                yield tile

    temporary = path.with_name(f".tmp-{path.name}")
    per_cm = 1e4 / MPP
    with tifffile.TiffWriter(temporary, bigtiff=True) as tiff:
        common = {"photometric": "rgb", "compression": "zlib", "compressionargs": {"level": 1}}
        tiff.write(
            tiles(), shape=(side, side, 3), dtype=np.uint8, tile=(TIFF_TILE, TIFF_TILE),
            resolution=(per_cm, per_cm), resolutionunit="CENTIMETER", **common,
        )  # fmt: skip
        for level in reduced.values():
            tiff.write(level, tile=(256, 256), subfiletype=1, **common)
    os.replace(temporary, path)


def run_predict(slide: pathlib.Path, out_dir: pathlib.Path) -> tuple[float, int, dict]:
    """Wall seconds, peak resident kB of the predict process, and its JSON record.

    The peak is the process's own VmHWM, polled: the ru_maxrss that wait4 returns
    would include this parent's resident memory, which the child shares until exec
    (the slides are written here, gigabytes for the large ones).
    """
    command = [
        sys.executable, "-m", "needles_tf.predict", f"--model={_MODEL.value}",
        f"--out_dir={out_dir}", f"--tile_size={_TILE_SIZE.value}",
        f"--batch_size={_BATCH_SIZE.value}", "--top_k=10", "--json", str(slide),
    ]  # fmt: skip
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    )
    peak_kb = 0
    while process.poll() is None:
        peak_kb = max(peak_kb, high_water_kb(process.pid))
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise app.UsageError(f"predict failed on {slide} (status {process.returncode}).")
    record = json.loads((out_dir / f"{slide.stem}.json").read_text())
    return seconds, peak_kb, record


def high_water_kb(pid: int) -> int:
    """The peak resident memory of process `pid` so far (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def found(box: tuple[int, int, int, int], regions: list[dict]) -> bool:
    y0, x0, y1, x1 = box
    return any(r["y0"] < y1 and y0 < r["y1"] and r["x0"] < x1 and x0 < r["x1"] for r in regions)


def main(argv: list[str]) -> None:
    del argv
    mnist_dir = pathlib.Path(_MNIST_DIR.value)
    images, labels = mnist_idx.read_split(
        mnist_dir / "t10k-images-idx3-ubyte.gz", mnist_dir / "t10k-labels-idx1-ubyte.gz"
    )
    pool = synthesis.DigitPool.from_range(images, labels, 0, len(images))
    workdir = pathlib.Path(_WORKDIR.value)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"{'slide':>12} {'tissue':>7} {'tiles':>6} {'seconds':>8} {'MP/s':>6} "
          f"{'tissue MP/s':>11} {'tiles/s':>7} {'peak RSS':>9}  needles found  p")  # fmt: skip
    for size in map(int, _SIZES.value):
        layout = SlideLayout(size, _NEEDLES.value, pool, _SEED.value)
        slide = workdir / f"slide_{size}.tif"
        if not slide.exists():
            start = time.perf_counter()
            write_slide(slide, layout)
            print(f"(wrote {slide} in {time.perf_counter() - start:.0f} s)", flush=True)
        seconds, peak_kb, record = run_predict(slide, workdir / f"out_{size}")
        tissue_share = record["tissue_tiles"] / record["tiles"]
        megapixels = size * size / 1e6
        regions = record["top_regions"]["regions"]
        hits = sum(found(box, regions) for box in layout.needle_boxes())
        print(
            f"{size:>6}x{size:<5} {tissue_share:>6.0%} {record['tissue_tiles']:>6} "
            f"{seconds:>8.1f} {megapixels / seconds:>6.2f} "
            f"{megapixels * tissue_share / seconds:>11.2f} "
            f"{record['tissue_tiles'] / seconds:>7.2f} {peak_kb / 1024:>7.0f} MB  "
            f"{hits}/{len(layout.needle_boxes())}  {record['probability']}",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
