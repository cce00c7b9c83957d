"""The object-to-image ratio (O2I) of an nMNIST canvas, read from its dataset name."""

from __future__ import annotations

import re

MNIST_DIGIT = 28  # pixels: an MNIST digit's side, the needle of nMNIST


def nmnist_o2i(dataset: str) -> float | None:
    """A 28x28 digit's share of the canvas of `nmnist/canvas_N...`; None for other datasets."""
    found = re.fullmatch(r"(?:nmnist/)?canvas_(\d+)(?:_.*)?", dataset)
    if not found:
        return None
    return MNIST_DIGIT**2 / int(found.group(1)) ** 2
