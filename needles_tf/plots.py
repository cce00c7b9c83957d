"""Pictures: saliency overlays as RGB arrays (TensorBoard, figures)."""

from __future__ import annotations

import pathlib

import numpy as np
from matplotlib import colormaps

from needles_tf.atomic import atomic_path
from needles_tf.metrics import has_needle


def saliency_overlay(
    image: np.ndarray,
    saliency: np.ndarray,
    box: np.ndarray | None = None,
    alpha: float = 0.5,
    colormap: str = "inferno",
) -> np.ndarray:
    """(H, W, C) uint8 image and (H, W) saliency in [0, 1] -> (H, W, 3) uint8 overlay.

    The saliency (a method's unit map, needles_tf.localization.methods) is
    coloured as it is, not rescaled, so that a map with nothing salient stays
    dark, and blended over the grey image;
    `box` (ymin, xmin, ymax, xmax, relative as TFDS BBoxFeature) is outlined in green.
    """
    image = np.asarray(image)
    grey = image.astype(np.float32).mean(axis=-1, keepdims=True) / 255.0
    colours = colormaps[colormap](np.clip(np.asarray(saliency, np.float32), 0.0, 1.0))[..., :3]
    overlay = (1.0 - alpha) * np.repeat(grey, 3, axis=-1) + alpha * colours
    overlay = (np.clip(overlay, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if has_needle(box):
        height, width = overlay.shape[:2]
        y0, x0, y1, x1 = np.asarray(box, np.float64) * [height, width, height, width]
        outline(overlay, int(y0), int(x0), int(y1), int(x1), (0, 255, 0))
    return overlay


def outline(
    image: np.ndarray,
    y0: int,
    x0: int,
    y1: int,
    x1: int,
    colour: tuple[int, int, int],
    thickness: int = 1,
) -> None:
    """Draws the border of pixels [y0, y1) x [x0, x1), clipped to `image`, in place."""
    height, width = image.shape[:2]
    y0, y1 = int(np.clip(y0, 0, height - 1)), int(np.clip(y1 - 1, 0, height - 1))
    x0, x1 = int(np.clip(x0, 0, width - 1)), int(np.clip(x1 - 1, 0, width - 1))
    t = max(1, int(thickness))
    rgb = np.asarray(colour, np.uint8)
    image[y0 : min(y0 + t, y1 + 1), x0 : x1 + 1] = rgb
    image[max(y1 - t + 1, y0) : y1 + 1, x0 : x1 + 1] = rgb
    image[y0 : y1 + 1, x0 : min(x0 + t, x1 + 1)] = rgb
    image[y0 : y1 + 1, max(x1 - t + 1, x0) : x1 + 1] = rgb


def save_figure(figure, path: pathlib.Path) -> None:
    """Writes a matplotlib figure as PNG, atomically, and closes it."""
    from matplotlib import pyplot as plt

    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)
