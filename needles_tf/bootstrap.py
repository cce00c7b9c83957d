"""95% confidence intervals of evaluation metrics: the percentile bootstrap over images.

Each resample draws the test images with replacement (Efron & Tibshirani, "An
Introduction to the Bootstrap", 1993, ch. 13); a resample is a row of `counts`,
how often each image was drawn, so that every metric is recomputed from per-image
summaries as a weighted statistic and all metrics of one evaluation share the same
resamples. Intervals are the 2.5th and 97.5th percentiles of the resampled values.
"""

from __future__ import annotations

import numpy as np
from scipy import special
from sklearn import metrics as sk_metrics

RESAMPLES = 1000
PXAP_BINS = 1000  # thresholds of the resampled PxAP (Choe et al. 2020 sweep thresholds too)


def resample_counts(images: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, images) int: how often each image is drawn in each resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(images, np.full(images, 1.0 / images), size=resamples)


def percentile_interval(values: np.ndarray, level: float = 0.95) -> list[float] | None:
    """[low, high] of the resampled `values` (undefined resamples, NaN, left out); None when
    no resample is defined."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return [float(low), float(high)]


def mean_interval(per_image: np.ndarray, counts: np.ndarray) -> list[float] | None:
    """Interval of a mean over images; images where `per_image` is NaN do not count (the
    pointing game, DICE and IoBB count only images with a needle)."""
    per_image = np.asarray(per_image, np.float64)
    counted = np.isfinite(per_image)
    weights = counts * counted
    totals = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = weights @ np.where(counted, per_image, 0.0) / totals
    return percentile_interval(means)


def auc_interval(labels: np.ndarray, probabilities: np.ndarray, counts: np.ndarray):
    """Interval of the ROC AUC of one class (resamples with one label only are undefined)."""
    truth = np.asarray(labels).ravel() > 0.5
    scores = np.asarray(probabilities).ravel()
    values = []
    for weights in counts:
        drawn = weights > 0
        if truth[drawn].all() or not truth[drawn].any():
            values.append(np.nan)
            continue
        values.append(
            sk_metrics.roc_auc_score(truth[drawn], scores[drawn], sample_weight=weights[drawn])
        )
    return percentile_interval(np.asarray(values))


def detection_ap_interval(
    confidences: np.ndarray, hits: np.ndarray, needles: np.ndarray, counts: np.ndarray
) -> list[float] | None:
    """Interval of the localization AP (metrics.localization_average_precision) from each
    image's max-saliency detection: its confidence, whether it hit, whether there is a needle."""
    order = np.argsort(-np.asarray(confidences), kind="stable")
    hits = np.asarray(hits, np.float64)[order]
    weights = counts[:, order].astype(np.float64)
    # An image drawn w times is w detections in a row. Before them come `found` true
    # positives among `ranked` detections; its copies, if hits, add the precisions
    # (found + j) / (ranked + j) for j = 1..w, which sum to
    # w + (found - ranked) * (digamma(ranked + w + 1) - digamma(ranked + 1)).
    found = np.cumsum(weights * hits, axis=1) - weights * hits
    ranked = np.cumsum(weights, axis=1) - weights
    harmonic = special.digamma(ranked + weights + 1) - special.digamma(ranked + 1)
    precisions = hits * (weights + (found - ranked) * harmonic)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = precisions.sum(axis=1) / (counts @ np.asarray(needles, np.float64))
    return percentile_interval(values)


def pixel_histograms(unit_map: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of needle and background pixels of one [0, 1] map in PXAP_BINS equal bins."""
    bins = np.clip((np.asarray(unit_map).ravel() * PXAP_BINS).astype(np.int64), 0, PXAP_BINS - 1)
    needle = np.asarray(mask).ravel() > 0
    return (
        np.bincount(bins[needle], minlength=PXAP_BINS),
        np.bincount(bins[~needle], minlength=PXAP_BINS),
    )


def binned_average_precision(needle: np.ndarray, background: np.ndarray) -> np.ndarray:
    """AP over thresholds at the bin edges, from needle and background counts per bin:
    (..., bins) -> (...). NaN where there is no needle pixel."""
    true_positives = np.cumsum(needle[..., ::-1], axis=-1)  # threshold lowered bin by bin
    detected = true_positives + np.cumsum(background[..., ::-1], axis=-1)
    total = true_positives[..., -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(detected > 0, true_positives / detected, 0.0)
        recall_gain = needle[..., ::-1] / total
        return np.sum(precision * recall_gain, axis=-1)


def pxap_interval(
    needle_histograms: np.ndarray,
    background_histograms: np.ndarray,
    counts: np.ndarray,
    exact: float | None = None,
) -> list[float] | None:
    """Interval of PxAP from per-image (images, PXAP_BINS) pixel histograms.

    Binning ties the pixels of one bin. Where maps crowd into a bin (a saturated map puts
    most pixels in the top one), the binned PxAP of the whole test set departs from the
    `exact` one (metrics.pixel_average_precision); the resampled values are then shifted
    by that difference, so that the interval measures the spread around the estimate.
    """
    weights = counts.astype(np.float64)
    values = binned_average_precision(weights @ needle_histograms, weights @ background_histograms)
    if exact is not None:
        whole = binned_average_precision(needle_histograms.sum(0), background_histograms.sum(0))
        values = values + (exact - whole)
    return percentile_interval(values)


def calibration_error_interval(
    labels: np.ndarray, probabilities: np.ndarray, counts: np.ndarray, bins: int
) -> list[float] | None:
    """Interval of metrics.expected_calibration_error, images resampled with all their classes."""
    labels = np.asarray(labels, np.float64).reshape(len(labels), -1)
    probabilities = np.asarray(probabilities, np.float64).reshape(len(probabilities), -1)
    which = np.minimum((probabilities * bins).astype(np.int64), bins - 1)
    one_hot = np.zeros((*which.shape, bins))
    np.put_along_axis(one_hot, which[..., None], 1.0, axis=-1)
    per_image = one_hot.sum(axis=1)  # (images, bins) decisions per bin
    weights = counts.astype(np.float64)
    decisions = weights @ per_image
    confidence = weights @ np.einsum("ik,ikb->ib", probabilities, one_hot)
    positives = weights @ np.einsum("ik,ikb->ib", labels, one_hot)
    values = np.abs(confidence - positives).sum(axis=1) / decisions.sum(axis=1)
    return percentile_interval(values)
