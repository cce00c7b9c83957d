"""A fast PNG encoder for sparse 8-bit grayscale canvases.

nMNIST canvases are mostly black. Unfiltered scanlines deflated with the
run-length strategy compress them better than Pillow's adaptive filtering, and
zlib-ng (a faster, output-compatible zlib) does it quickly: for a 1024x1024
canvas with 401 digits, 2.0 ms and 67 kB here, against 20 ms and 83 kB for
Pillow at compress_level=1 and 6.0 ms for CPython's zlib with the same settings
(benchmarks/png_encoding.py). The output is a standard PNG (ISO/IEC 15948).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from zlib_ng import zlib_ng

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GRAY8 = (8, 0, 0, 0, 0)  # bit depth, colour type grey, deflate, filters, no interlace


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_gray_png(image: np.ndarray) -> bytes:
    """Encodes an (H, W) or (H, W, 1) uint8 array as a grayscale PNG."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}.")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 1) image, got shape {image.shape}.")
    height, width = image.shape
    scanlines = np.zeros((height, width + 1), np.uint8)  # column 0: filter type 0 (None)
    scanlines[:, 1:] = image
    deflate = zlib_ng.compressobj(1, zlib_ng.DEFLATED, 15, 9, zlib_ng.Z_RLE)
    idat = deflate.compress(scanlines.data) + deflate.flush()
    header = struct.pack(">II5B", width, height, *_GRAY8)
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
