"""The evaluators' figures (PNG, written atomically by needles_tf.plots.save_figure).

precision_recall.png             localization precision-recall, one curve per method
overlays.png                     true/false positives/negatives with their maps
                                 (like Pawlowski et al. 2019 Fig. 16)
reliability.png                  the calibration: reliability diagram and bin counts
detection_precision_recall.png   many needles: the detection curve, its AP
detections.png                   many needles: hits, false alarms and missed needles
"""

from __future__ import annotations

import dataclasses
import pathlib

import matplotlib
import numpy as np

from needles_tf import metrics
from needles_tf.localization import detection
from needles_tf.plots import saliency_overlay, save_figure

matplotlib.use("Agg")
from matplotlib import patches
from matplotlib import pyplot as plt

OUTCOMES = ("TP", "FP", "FN", "TN")
GALLERY_PER_OUTCOME = 6


@dataclasses.dataclass
class Gallery:
    """The first GALLERY_PER_OUTCOME images of each outcome at probability 0.5: what
    overlays.png shows, each as (index among the evaluated images, image, label, p)."""

    chosen: dict[str, list] = dataclasses.field(
        default_factory=lambda: {outcome: [] for outcome in OUTCOMES}
    )

    def offer(self, index: int, image: np.ndarray, label: float, probability: float) -> None:
        positive = probability >= 0.5
        outcome = ("T" if positive == (label > 0.5) else "F") + ("P" if positive else "N")
        if len(self.chosen[outcome]) < GALLERY_PER_OUTCOME:
            self.chosen[outcome].append((index, image, label, probability))


def precision_recall(maps, boxes, path: pathlib.Path) -> None:
    """Localization by each method's maximum saliency: precision against recall, with AP."""
    figure, axes = plt.subplots(figsize=(4.5, 4))
    for name, saliency_maps in maps.items():
        recall, precision = metrics.localization_precision_recall(saliency_maps, boxes)
        ap = metrics.localization_average_precision(saliency_maps, boxes)
        axes.plot(recall, precision, label=f"{name} (AP {ap:.3f})")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title("Localization by maximum saliency")
    axes.legend(loc="lower left")
    save_figure(figure, path)


def overlays(gallery: Gallery, maps, boxes, method: str, path: pathlib.Path) -> None:
    """Rows of true positives, false positives, false negatives and true negatives."""
    per_row = GALLERY_PER_OUTCOME
    figure, axes = plt.subplots(4, per_row, figsize=(1.8 * per_row, 8.2), squeeze=False)
    for r, outcome in enumerate(OUTCOMES):
        chosen = gallery.chosen[outcome]
        for c in range(per_row):
            axis = axes[r, c]
            axis.axis("off")
            if c == 0 and not chosen:
                axis.text(0.5, 0.5, f"no {outcome}", ha="center", va="center", fontsize=9)
            if c < len(chosen):
                i, image, label, probability = chosen[c]
                axis.imshow(saliency_overlay(image, maps[i], boxes[i]))
                axis.set_title(f"{outcome}: y={int(label)} p={probability:.2f}", fontsize=8)
    figure.suptitle(f"{method} saliency; green: the needle's box", fontsize=10)
    save_figure(figure, path)


def reliability(calibration: dict, classification: dict, path: pathlib.Path) -> None:
    """Reliability diagram: the fraction of positives against the mean probability per bin,
    bars as wide as the bins, with the diagonal of perfect calibration and the bins' counts."""
    bins = calibration["bins"]
    centres = (np.arange(bins) + 0.5) / bins
    frequency = np.asarray(calibration["frequency"], np.float64)
    count = np.asarray(calibration["count"])
    figure, (axes, counts) = plt.subplots(
        2, 1, figsize=(4.5, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    axes.bar(centres, np.nan_to_num(frequency), width=1.0 / bins, edgecolor="black",
             color="tab:blue", label="fraction positive")  # fmt: skip
    axes.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ece = classification["expected_calibration_error"]
    axes.set(ylabel="fraction of positives", xlim=(0, 1), ylim=(0, 1))
    axes.set_title(f"Reliability (ECE {ece:.3f})")
    axes.legend(loc="upper left")
    counts.bar(centres, count, width=1.0 / bins, color="grey", edgecolor="black")
    counts.set(xlabel="predicted probability", ylabel="images", yscale="log")
    save_figure(figure, path)


def detection_curve(tally: detection.DetectionTally, found: dict, path: pathlib.Path) -> None:
    """Detection by local maxima: precision against recall of every needle, the AP, and
    the point at the detection threshold."""
    recall, precision = tally.curve()
    figure, axes = plt.subplots(figsize=(4.5, 4))
    axes.plot(recall, precision, label=f"AP {found['average_precision']:.3f}")
    axes.plot(found["recall"], found["precision"], "o", label=f"at {found['threshold']:g}")
    axes.set(xlabel="recall (of every needle)", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title("Detection by local maxima")
    axes.legend(loc="lower left")
    save_figure(figure, path)


def detections(pictures, threshold: float, path: pathlib.Path) -> None:
    """Canvases with their detections at `threshold` (+ hit, x false alarm) and every
    needle's box (green: found, yellow: missed); `pictures` holds (image (H, W), points,
    scores, hits, boxes in pixels) per canvas."""
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
