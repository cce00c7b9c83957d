"""Many-needles evaluation: every needle detected from the model's per-cell map.

What `python -m needles_tf.evaluate` runs on a dataset that boxes every needle
(nmnist/many_needles_*): the local maxima of the served map are the detections
(needles_tf/localization/detection.py); it writes precision, recall, F1 and AP,
the precision-recall curve and a picture of hits, false alarms and misses.
"""

from __future__ import annotations

import pathlib
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from needles_tf.data.dense import NEEDLES_FEATURE
from needles_tf.localization import detection
from needles_tf.plots import save_figure

PEAK_FLOOR = 0.01  # maxima below this score are not detections (they only lengthen the curve)
PICTURES = 2  # canvases drawn in detections.png


def has_needles(data: tf.data.Dataset) -> bool:
    """Whether examples box every needle (many-needles datasets)."""
    return NEEDLES_FEATURE in data.element_spec


def evaluate_detection(
    model: keras.Model,
    data: tf.data.Dataset,
    batch_size: int,
    peak_distance: float,
    threshold: float,
    out: pathlib.Path,
    progress,
) -> dict[str, Any]:
    """Detection metrics of `model`'s map (class 0) over `data`; figures into `out`."""
    receptive_field, stride = model.geometry
    min_distance = max(1, round(peak_distance / stride))
    tally = detection.DetectionTally()
    pictures = []
    batches = data.map(lambda ex: (ex["image"], ex[NEEDLES_FEATURE]["bbox"])).padded_batch(
        batch_size, padded_shapes=([None, None, None], [None, 4]), padding_values=(None, -1.0)
    )
    for images, boxes in batches.as_numpy_iterator():
        maps = np.asarray(model.predict_on_batch(images.astype(np.float32))["saliency"])[..., 0]
        size = np.array(images.shape[1:3] * 2, np.float64)
        for image, cell_map, own in zip(images, maps, boxes, strict=True):
            own = own[own[:, 0] >= 0] * size
            cells, scores = detection.peaks(cell_map, min_distance, PEAK_FLOOR)
            points = detection.cell_centres(cells, receptive_field, stride)
            hits = detection.match(points, scores, own)
            tally.add(scores, hits, len(own))
            if len(pictures) < PICTURES:
                pictures.append((image[..., 0], points, scores, hits, own))
        progress.add(1)
    results = tally.summary(threshold)
    results["min_distance_cells"] = min_distance
    _plot_curve(tally, results, out / "detection_precision_recall.png")
    _plot_detections(pictures, threshold, out / "detections.png")
    return results


def _plot_curve(tally: detection.DetectionTally, results: dict, path: pathlib.Path) -> None:
    from matplotlib import pyplot as plt

    recall, precision = tally.curve()
    figure, axes = plt.subplots(figsize=(4.5, 4))
    axes.plot(recall, precision, label=f"AP {results['average_precision']:.3f}")
    axes.plot(results["recall"], results["precision"], "o", label=f"at {results['threshold']:g}")
    axes.set(xlabel="recall (of every needle)", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title("Detection by local maxima")
    axes.legend(loc="lower left")
    save_figure(figure, path)


def _plot_detections(pictures, threshold: float, path: pathlib.Path) -> None:
    from matplotlib import patches
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, len(pictures), figsize=(6 * len(pictures), 6), squeeze=False)
    for axis, (image, points, scores, hits, boxes) in zip(axes[0], pictures, strict=False):
        axis.imshow(image, cmap="gray")
        kept = scores >= threshold
        found = set()
        for (y, x), hit in zip(points[kept], hits[kept], strict=True):
            axis.plot(x, y, "+" if hit else "x", color="lime" if hit else "red", ms=8, mew=2)
            if hit:
                found.add((y, x))
        for ymin, xmin, ymax, xmax in boxes:
            hit = any(ymin <= y < ymax and xmin <= x < xmax for y, x in found)
            axis.add_patch(
                patches.Rectangle(
                    (xmin, ymin),
                    xmax - xmin,
                    ymax - ymin,
                    fill=False,
                    lw=1,
                    edgecolor="lime" if hit else "yellow",
                )
            )
        axis.axis("off")
    figure.suptitle(
        f"Detections at score >= {threshold:g}: + hit, x false alarm; yellow box: missed",
        fontsize=10,
    )
    save_figure(figure, path)
