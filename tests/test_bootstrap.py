"""Bootstrap intervals: each resample's weighted statistic equals the metric on the drawn images."""

from __future__ import annotations

import numpy as np
import pytest

from needles_tf import bootstrap, metrics

RNG = np.random.default_rng(7)
N = 40


def one_resample(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """counts (1, N) of one resample, and the drawn image indices it stands for."""
    counts = bootstrap.resample_counts(N, resamples=1, seed=seed)
    return counts, np.repeat(np.arange(N), counts[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_statistic_is_the_metric_of_the_drawn_images(seed):
    counts, drawn = one_resample(seed)
    assert counts.sum() == N
    labels = (RNG.random((N, 1)) < 0.5).astype(np.float32)
    probabilities = np.clip(labels * 0.4 + RNG.random((N, 1)) * 0.6, 0, 1)

    def only(interval):
        low, high = interval
        assert low == pytest.approx(high)
        return low

    correct = ((probabilities >= 0.5) == (labels > 0.5))[:, 0].astype(float)
    assert only(bootstrap.mean_interval(correct, counts)) == pytest.approx(
        metrics.accuracy(labels[drawn], probabilities[drawn])
    )
    assert only(bootstrap.auc_interval(labels, probabilities, counts)) == pytest.approx(
        metrics.roc_auc(labels[drawn], probabilities[drawn])["mean"]
    )
    assert only(bootstrap.calibration_error_interval(labels, probabilities, counts, 15)) == (
        pytest.approx(metrics.expected_calibration_error(labels[drawn], probabilities[drawn], 15))
    )

    confidences = RNG.random(N)
    needles = RNG.random(N) < 0.6
    hits = needles & (RNG.random(N) < 0.7)
    assert only(bootstrap.detection_ap_interval(confidences, hits, needles, counts)) == (
        pytest.approx(
            metrics.detection_average_precision(confidences[drawn], hits[drawn], needles[drawn])
        )
    )

    pointing = np.where(needles, hits.astype(float), np.nan)  # NaN: no needle, not counted
    expected = np.nanmean(pointing[drawn])
    assert only(bootstrap.mean_interval(pointing, counts)) == pytest.approx(expected)


def test_pxap_of_binned_maps_is_scikit_learns_average_precision():
    """On maps whose values sit on the bins, the binned PxAP is exact, resample or not."""
    maps = [np.round(RNG.random((6, 6)) * 50) / 50 * 0.999 for _ in range(N)]
    masks = [RNG.random((6, 6)) < 0.2 for _ in range(N)]
    histograms = [bootstrap.pixel_histograms(m, k) for m, k in zip(maps, masks, strict=True)]
    needle = np.stack([h[0] for h in histograms])
    background = np.stack([h[1] for h in histograms])
    all_once = np.ones((1, N), int)
    assert bootstrap.pxap_interval(needle, background, all_once)[0] == pytest.approx(
        metrics.pixel_average_precision(maps, masks)
    )
    counts, drawn = one_resample(3)
    assert bootstrap.pxap_interval(needle, background, counts)[0] == pytest.approx(
        metrics.pixel_average_precision([maps[i] for i in drawn], [masks[i] for i in drawn])
    )


def test_pxap_interval_of_saturated_maps_covers_the_exact_estimate():
    """Maps crowded into the top bin (a saturated instance map): the binned PxAP is off,
    the interval shifted to the exact one covers it."""
    maps = [1.0 - RNG.random((8, 8)) * 1e-4 for _ in range(200)]  # all in the top bin
    masks = [RNG.random((8, 8)) < 0.2 for _ in range(200)]
    for saliency, mask in zip(maps, masks, strict=True):
        saliency[mask] += 5e-5 * RNG.random(mask.sum())  # needles rank higher, within the bin
    histograms = [bootstrap.pixel_histograms(m, k) for m, k in zip(maps, masks, strict=True)]
    needle = np.stack([h[0] for h in histograms])
    background = np.stack([h[1] for h in histograms])
    exact = metrics.pixel_average_precision(maps, masks)
    counts = bootstrap.resample_counts(200)
    low, high = bootstrap.pxap_interval(needle, background, counts)
    assert not low <= exact <= high  # what binning alone gave
    low, high = bootstrap.pxap_interval(needle, background, counts, exact=exact)
    assert low <= exact <= high


def test_intervals_cover_the_estimate_and_shrink_with_more_images():
    def width(n: int) -> float:
        correct = (np.arange(n) % 4 != 0).astype(float)  # accuracy 0.75
        low, high = bootstrap.mean_interval(correct, bootstrap.resample_counts(n))
        assert low < 0.75 < high
        return high - low

    small, large = width(100), width(1600)
    # The binomial standard error halves when n quadruples: 1600 images, a quarter of the width.
    assert large == pytest.approx(small / 4, rel=0.25)
    assert small == pytest.approx(2 * 1.96 * np.sqrt(0.75 * 0.25 / 100), rel=0.15)


def test_undefined_resamples_are_left_out_and_all_undefined_is_none():
    labels = np.array([[1.0]] * N)  # one class: AUC undefined in every resample
    counts = bootstrap.resample_counts(N, resamples=20)
    assert bootstrap.auc_interval(labels, RNG.random((N, 1)), counts) is None
    no_needles = np.full(N, np.nan)
    assert bootstrap.mean_interval(no_needles, counts) is None
