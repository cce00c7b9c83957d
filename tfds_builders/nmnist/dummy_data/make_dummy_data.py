"""Writes the fake MNIST files in this folder: `python make_dummy_data.py`.

The digits are drawn from a 3x5 pixel font, not taken from MNIST. The training
file holds 5,000 + 60 images so that the builder's real split boundary
(validation = images [:5000]) applies; few of them are 3s, so the splits stay
small: validation 3 threes, train 6, test 4 (of 40 images).
"""

from __future__ import annotations

import gzip
import pathlib
import struct

import numpy as np

FONT = {  # 3 columns x 5 rows per digit, row-major
    0: "111101101101111",
    1: "010110010010111",
    2: "111001111100111",
    3: "111001111001111",
    4: "101101111001001",
    5: "111100111001111",
    6: "111100111101111",
    7: "111001010010010",
    8: "111101111101111",
    9: "111101111001111",
}
SCALE = 4  # glyphs become 12x20 pixels inside the 28x28 frame


def glyph(digit: int, rng: np.random.Generator) -> np.ndarray:
    bits = np.array([int(b) for b in FONT[digit]], np.uint8).reshape(5, 3)
    big = np.kron(bits, np.ones((SCALE, SCALE), np.uint8)) * rng.integers(128, 256)
    image = np.zeros((28, 28), np.uint8)
    row, col = rng.integers(2, 28 - big.shape[0] - 1), rng.integers(2, 28 - big.shape[1] - 1)
    image[row : row + big.shape[0], col : col + big.shape[1]] = big
    return image


def labels_with_threes(num: int, three_positions: list[int], rng: np.random.Generator):
    labels = rng.choice([0, 1, 2, 4, 5, 6, 7, 8, 9], size=num).astype(np.uint8)
    labels[three_positions] = 3
    return labels


def write_idx(path: pathlib.Path, array: np.ndarray, magic: int) -> None:
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(header + array.tobytes())


def main() -> None:
    here = pathlib.Path(__file__).parent
    rng = np.random.default_rng(0)
    files = {
        "train": labels_with_threes(
            5060, [17, 2500, 4999, 5000, 5011, 5023, 5030, 5047, 5059], rng
        ),
        "t10k": labels_with_threes(40, [0, 9, 21, 39], rng),
    }
    for prefix, labels in files.items():
        images = np.stack([glyph(int(d), rng) for d in labels])
        write_idx(here / f"{prefix}-images-idx3-ubyte.gz", images, 0x803)
        write_idx(here / f"{prefix}-labels-idx1-ubyte.gz", labels, 0x801)


if __name__ == "__main__":
    main()
