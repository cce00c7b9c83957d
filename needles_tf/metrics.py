"""Classification and weak-localization metrics, in NumPy (scikit-learn and scikit-image).

Saliency maps are (H, W) arrays at input resolution: raw maps rank detections
(localization AP, pointing game), [0, 1] maps are thresholded (DICE, IoBB, PxAP); boxes
are (ymin, xmin, ymax, xmax) relative to the image, as TFDS BBoxFeature
stores them, and an all-zero box means "no needle".
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage import measure
from sklearn import metrics as sk_metrics


def accuracy(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of (image, class) decisions `probability >= threshold` that match the labels."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    return float(np.mean((probabilities >= threshold) == (labels > 0.5)))


def roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """ROC AUC per class (`class_k`) and their mean (`mean`); classes with one label are NaN."""
    labels = np.asarray(labels).reshape(len(labels), -1)
    probabilities = np.asarray(probabilities).reshape(len(probabilities), -1)
    per_class = {}
    for k in range(labels.shape[1]):
        column = labels[:, k] > 0.5
        per_class[f"class_{k}"] = (
            float(sk_metrics.roc_auc_score(column, probabilities[:, k]))
            if 0 < column.sum() < len(column)
            else float("nan")
        )
    values = [v for v in per_class.values() if not np.isnan(v)]
    return {**per_class, "mean": float(np.mean(values)) if values else float("nan")}


def has_needle(box: np.ndarray | None) -> bool:
    """Whether `box` marks a needle (None and the all-zero box mean none)."""
    return box is not None and bool(np.any(np.asarray(box) > 0))


def box_mask(box: np.ndarray, height: int, width: int) -> np.ndarray:
    """The (height, width) boolean mask of a relative (ymin, xmin, ymax, xmax) box."""
    ymin, xmin, ymax, xmax = np.asarray(box, np.float64) * [height, width, height, width]
    mask = np.zeros((height, width), bool)
    mask[int(np.floor(ymin)) : int(np.ceil(ymax)), int(np.floor(xmin)) : int(np.ceil(xmax))] = True
    return mask


def _argmax_position(saliency: np.ndarray) -> tuple[int, int]:
    return np.unravel_index(int(np.argmax(saliency)), saliency.shape)


def image_detections(
    saliency_maps: list[np.ndarray], boxes: list[np.ndarray | None]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image's max-saliency detection: its confidence (the saliency there), whether it
    hits the needle's box, and whether the image has a needle; three (images,) arrays."""
    confidences, hits, needles = [], [], []
    for saliency, box in zip(saliency_maps, boxes, strict=True):
        saliency = np.asarray(saliency)
        y, x = _argmax_position(saliency)
        needle = has_needle(box)
        needles.append(needle)
        confidences.append(float(saliency[y, x]))
        hits.append(bool(needle and box_mask(box, *saliency.shape)[y, x]))
    return np.asarray(confidences), np.asarray(hits, bool), np.asarray(needles, bool)


def max_saliency_detections(
    saliency_maps: list[np.ndarray], boxes: list[np.ndarray | None]
) -> tuple[np.ndarray, int]:
    """Per image, whether its max-saliency detection hits the needle, ranked by confidence
    (the saliency there, highest first); and the number of images with a needle."""
    confidences, hits, needles = image_detections(saliency_maps, boxes)
    order = np.argsort(-confidences, kind="stable")
    return hits[order], int(needles.sum())


def localization_precision_recall(
    saliency_maps: list[np.ndarray], boxes: list[np.ndarray | None]
) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision after each ranked detection (see localization_average_precision)."""
    hits, needles = max_saliency_detections(saliency_maps, boxes)
    true_positives = np.cumsum(hits)
    return true_positives / max(needles, 1), true_positives / np.arange(1, len(hits) + 1)


def localization_average_precision(
    saliency_maps: list[np.ndarray], boxes: list[np.ndarray | None]
) -> float:
    """Average precision of max-saliency detections (Pawlowski et al. 2019 App. C.4; Oquab et al.).

    Each image gives one detection: the position of its maximum saliency, with
    that saliency as confidence. It is a true positive when it falls inside the
    needle's box; a wrong one on an image with a needle is a false positive and
    leaves that needle undetected (a false negative); on an image without a
    needle (box None or all zero) it is a false positive only. AP is the mean of
    the precision at the rank of each true positive over all needles.
    """
    return detection_average_precision(*image_detections(saliency_maps, boxes))


def detection_average_precision(
    confidences: np.ndarray, hits: np.ndarray, needles: np.ndarray
) -> float:
    """localization_average_precision from each image's detection (`image_detections`)."""
    order = np.argsort(-np.asarray(confidences), kind="stable")
    hits = np.asarray(hits, bool)[order]
    if not np.any(needles):
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(np.sum(precision[hits]) / np.sum(needles))


def continuous_dice(saliency: np.ndarray, target: np.ndarray) -> float:
    """2·ΣSG / (ΣS² + ΣG²) of a [0, 1] saliency map S and a binary mask G (Yao et al. 2018 §4.2)."""
    s = np.asarray(saliency, np.float64)
    g = np.asarray(target, np.float64)
    denominator = np.sum(s * s) + np.sum(g * g)
    return float(2.0 * np.sum(s * g) / denominator) if denominator > 0 else 1.0


def iobb_hit(saliency: np.ndarray, box: np.ndarray, tau: float, alpha: float) -> bool:
    """Whether a box of the saliency binarized at `tau` has IoBB >= `alpha` (Yao et al., Table 2).

    Predicted boxes are the bounding boxes of the connected components of
    S > tau; IoBB is the area of a predicted box inside the ground-truth box
    divided by the predicted box's area (Wang et al., ChestX-ray8).
    """
    saliency = np.asarray(saliency)
    truth = box_mask(box, *saliency.shape)
    for region in measure.regionprops(measure.label(saliency > tau)):
        y0, x0, y1, x1 = region.bbox
        if truth[y0:y1, x0:x1].mean() >= alpha:
            return True
    return False


def iobb_accuracy(
    saliency_maps: list[np.ndarray], boxes: list[np.ndarray], tau: float, alpha: float = 0.5
) -> float:
    """Fraction of images with a needle whose saliency passes `iobb_hit`."""
    hits = [
        iobb_hit(s, b, tau, alpha)
        for s, b in zip(saliency_maps, boxes, strict=True)
        if has_needle(b)
    ]
    return float(np.mean(hits)) if hits else float("nan")


def pixel_average_precision(saliency_maps: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """PxAP: average precision of all pixels' saliency against the masks.

    Choe et al. 2020; Guichemerre et al. 2025. The maps must share one scale,
    as WSOL benchmarks ensure by scaling each to [0, 1]: give the unit maps of
    needles_tf.localization.methods.
    """
    positives, negatives = [], []
    for saliency, mask in zip(saliency_maps, masks, strict=True):
        saliency, truth = np.asarray(saliency, np.float32), np.asarray(mask) > 0
        positives.append(saliency[truth])
        negatives.append(saliency[~truth])
    return average_precision(np.concatenate(positives), np.concatenate(negatives))


def average_precision(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Σ (R_n - R_{n-1}) P_n over the score thresholds, as scikit-learn's
    average_precision_score, from the positives' and the negatives' scores.

    Recall changes only at the positives' distinct scores t, so AP is the mean over
    positives of the precision at their score: TP(t) / (TP(t) + FP(t)), with TP and FP
    the scores >= t, counted by binary search in the sorted scores. Memory is that of
    the scores, not the several int64 and float64 copies of every pixel a general
    precision-recall curve takes (16 GB for the 265 million pixels of canvas_256's
    test split).
    """
    if positives.size == 0:
        return float("nan")
    positives, negatives = np.sort(positives), np.sort(negatives)
    thresholds, counts = np.unique(positives, return_counts=True)
    true_positives = positives.size - np.searchsorted(positives, thresholds, side="left")
    false_positives = negatives.size - np.searchsorted(negatives, thresholds, side="left")
    precision = true_positives / (true_positives + false_positives)
    return float(np.sum(counts * precision) / positives.size)


def pointing_hits(
    saliency_maps: list[np.ndarray], boxes: list[np.ndarray], tolerance: int = 0
) -> np.ndarray:
    """Per image, 1.0 when its maximum saliency lies within `tolerance` pixels of the
    needle's box, 0.0 when not, NaN when the image has no needle."""
    hits = []
    for saliency, box in zip(saliency_maps, boxes, strict=True):
        if not has_needle(box):
            hits.append(np.nan)
            continue
        saliency = np.asarray(saliency)
        y, x = _argmax_position(saliency)
        truth = box_mask(box, *saliency.shape)
        y0, y1 = max(y - tolerance, 0), y + tolerance + 1
        x0, x1 = max(x - tolerance, 0), x + tolerance + 1
        hits.append(float(truth[y0:y1, x0:x1].any()))
    return np.asarray(hits, np.float64)


def pointing_game(
    saliency_maps: list[np.ndarray], boxes: list[np.ndarray], tolerance: int = 0
) -> float:
    """Fraction of images with a needle whose maximum saliency lies within `tolerance`
    pixels of the needle's box (Zhang et al., 2016)."""
    hits = pointing_hits(saliency_maps, boxes, tolerance)
    return float(np.nanmean(hits)) if np.isfinite(hits).any() else float("nan")


def calibration_curve(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = 15
) -> dict[str, list[float]]:
    """Reliability diagram data: every (image, class) probability in `bins` equal-width bins;
    per bin the decisions, their mean probability and the fraction that are positive
    (NaN in an empty bin)."""
    probabilities = np.asarray(probabilities, np.float64).ravel()
    labels = np.asarray(labels, np.float64).ravel() > 0.5
    which = np.minimum((probabilities * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, probabilities, minlength=bins) / count
        frequency = np.bincount(which, labels, minlength=bins) / count
    return {
        "count": count.astype(int).tolist(),
        "confidence": confidence.tolist(),
        "frequency": frequency.tolist(),
    }


def expected_calibration_error(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = 15
) -> float:
    """ECE (Naeini et al. 2015; Guo et al. 2017 §2): the decisions' share in each bin times
    the gap between the bin's mean probability and its fraction of positives, summed."""
    curve = calibration_curve(labels, probabilities, bins)
    count = np.asarray(curve["count"], np.float64)
    gap = np.abs(np.asarray(curve["confidence"]) - np.asarray(curve["frequency"]))
    return float(np.nansum(count * gap) / count.sum())


UNDEFINED_REASON = (
    "undefined on these examples: one class only (AUC), or no image with a needle "
    "(localization metrics)"
)


def strict_json_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """`results` with every NaN or infinity as None (strict JSON has neither), and an
    `undefined` entry naming each such metric by its dotted path, with the reason."""
    undefined: dict[str, str] = {}

    def clean(value: Any, path: str) -> Any:
        if isinstance(value, dict):
            return {k: clean(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v, f"{path}.{i}") for i, v in enumerate(value)]
        if isinstance(value, float | np.floating) and not np.isfinite(value):
            undefined[path] = UNDEFINED_REASON
            return None
        return value

    cleaned = clean(results, "")
    if undefined:
        cleaned["undefined"] = undefined
    return cleaned
