"""Reading the four gzipped MNIST idx files, with errors that name the file.

The idx format (LeCun et al.): a big-endian header of two zero bytes, a type
byte (0x08 = unsigned byte), the number of dimensions, one uint32 per
dimension, then the row-major payload.
"""

from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np
from etils import epath

IMAGES_MAGIC = 0x00000803  # ubyte, 3 dimensions: (n, rows, cols)
LABELS_MAGIC = 0x00000801  # ubyte, 1 dimension: (n,)
MNIST_IMAGE_SIZE = 28


class MnistFileError(ValueError):
    """An MNIST file is missing, truncated, or not the idx file expected."""


def read_images(path: epath.PathLike) -> np.ndarray:
    """Returns the images of an `*-images-idx3-ubyte.gz` file, (n, 28, 28) uint8."""
    images = _read_idx(path, IMAGES_MAGIC, "idx3 images (n, 28, 28)")
    if images.shape[1:] != (MNIST_IMAGE_SIZE, MNIST_IMAGE_SIZE):
        raise MnistFileError(
            f"{path}: expected {MNIST_IMAGE_SIZE}x{MNIST_IMAGE_SIZE} images, "
            f"the header says {images.shape[1]}x{images.shape[2]}."
        )
    return images


def read_labels(path: epath.PathLike) -> np.ndarray:
    """Returns the labels of an `*-labels-idx1-ubyte.gz` file, (n,) uint8 in 0..9."""
    labels = _read_idx(path, LABELS_MAGIC, "idx1 labels (n,)")
    if labels.size and labels.max() > 9:
        raise MnistFileError(f"{path}: expected digit labels 0..9, found {labels.max()}.")
    return labels


def read_split(images_path: epath.PathLike, labels_path: epath.PathLike):
    """Returns (images, labels) of one MNIST file pair, checked to have equal length."""
    images, labels = read_images(images_path), read_labels(labels_path)
    if len(images) != len(labels):
        raise MnistFileError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; expected the same number."
        )
    return images, labels


def _read_idx(path: epath.PathLike, magic: int, what: str) -> np.ndarray:
    path = epath.Path(path)
    if not path.exists():
        raise MnistFileError(f"{path}: file not found (expected gzipped MNIST {what}).")
    try:
        with path.open("rb") as raw, gzip.GzipFile(fileobj=raw) as f:
            data = f.read()
    except EOFError as e:
        raise MnistFileError(f"{path}: truncated gzip stream ({e}).") from e
    except (gzip.BadGzipFile, zlib.error, OSError) as e:
        raise MnistFileError(f"{path}: not a valid gzip file ({e}).") from e

    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    found = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else None
    if found != magic:
        shown = "missing" if found is None else f"0x{found:08x}"
        raise MnistFileError(f"{path}: idx magic number {shown}, expected 0x{magic:08x} ({what}).")
    if len(data) < header_size:
        raise MnistFileError(
            f"{path}: {len(data)} bytes is too short for the {header_size}-byte header of {what}."
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    expected = int(np.prod(shape))
    payload = len(data) - header_size
    if payload != expected:
        raise MnistFileError(
            f"{path}: header announces shape {shape} ({expected} bytes) but the file "
            f"holds {payload} bytes of data."
        )
    return np.frombuffer(data, np.uint8, offset=header_size).reshape(shape)
