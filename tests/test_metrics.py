"""Metrics against small cases computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from needles_tf import metrics

BOX = np.array([0.0, 0.0, 0.5, 0.5])  # the top-left quarter of a 4x4 image
NONE = np.zeros(4)


def peak(y: int, x: int, value: float, size: int = 4) -> np.ndarray:
    saliency = np.zeros((size, size))
    saliency[y, x] = value
    return saliency


def test_accuracy_and_auc():
    labels = np.array([[1], [0], [1], [0]])
    probabilities = np.array([[0.9], [0.4], [0.3], [0.2]])
    assert metrics.accuracy(labels, probabilities) == 0.75
    # Positive/negative pairs ranked correctly: (0.9 > 0.4, 0.9 > 0.2, 0.3 < 0.4, 0.3 > 0.2) = 3/4.
    assert metrics.roc_auc(labels, probabilities) == {"class_0": 0.75, "mean": 0.75}
    two = metrics.roc_auc(np.array([[1, 0], [0, 0]]), np.array([[0.8, 0.1], [0.2, 0.3]]))
    assert two["class_0"] == 1.0 and np.isnan(two["class_1"]) and two["mean"] == 1.0


def test_box_mask_covers_the_relative_box():
    mask = metrics.box_mask(np.array([0.25, 0.5, 0.75, 1.0]), 4, 4)
    assert mask.sum() == 4 and mask[1:3, 2:4].all()


def test_localization_average_precision_by_hand():
    # Ranked by confidence: hit (0.9), miss on a needle image (0.8), negative image (0.7),
    # hit (0.6). Three needles: precisions at the hits are 1/1 and 2/4, and the needle whose
    # detection missed is never found (a false negative) -> AP = (1 + 0 + 0.5) / 3.
    maps = [peak(0, 0, 0.9), peak(3, 3, 0.8), peak(1, 1, 0.7), peak(1, 0, 0.6)]
    boxes = [BOX, BOX, NONE, BOX]
    assert metrics.localization_average_precision(maps, boxes) == pytest.approx(
        (1.0 + 0.0 + 2 / 4) / 3
    )
    assert metrics.localization_average_precision([peak(0, 0, 1.0)], [BOX]) == 1.0
    assert np.isnan(metrics.localization_average_precision([peak(0, 0, 1.0)], [NONE]))


def test_continuous_dice_by_hand():
    target = metrics.box_mask(BOX, 4, 4)  # 4 pixels
    assert metrics.continuous_dice(target.astype(float), target) == 1.0
    half = target * 0.5
    # 2 * (4 * 0.5) / (4 * 0.25 + 4) = 4 / 5
    assert metrics.continuous_dice(half, target) == pytest.approx(0.8)
    assert metrics.continuous_dice(np.zeros((4, 4)), target) == 0.0


def test_iobb_accuracy_by_hand():
    inside = peak(0, 0, 1.0) + peak(1, 1, 1.0)  # two components, both inside the box
    straddling = np.zeros((4, 4))
    straddling[1, 1:3] = 1.0  # one box of 2 pixels, half inside
    assert metrics.iobb_hit(inside, BOX, tau=0.5, alpha=0.5)
    assert metrics.iobb_hit(straddling, BOX, tau=0.5, alpha=0.5)
    assert not metrics.iobb_hit(straddling, BOX, tau=0.5, alpha=0.75)
    assert not metrics.iobb_hit(straddling, BOX, tau=1.0, alpha=0.5)  # nothing above tau
    assert metrics.iobb_accuracy([inside, straddling, inside], [BOX, BOX, NONE], 0.5, 0.75) == 0.5


def test_pixel_average_precision_by_hand():
    mask = np.array([[1, 0], [0, 0]])
    perfect = np.array([[0.9, 0.1], [0.2, 0.0]])
    assert metrics.pixel_average_precision([perfect], [mask]) == 1.0
    # The mask pixel ranks second of four: precision 1/2 at recall 1.
    second = np.array([[0.5, 0.9], [0.2, 0.0]])
    assert metrics.pixel_average_precision([second], [mask]) == pytest.approx(0.5)


def test_pointing_game_by_hand():
    maps = [peak(0, 0, 1.0), peak(3, 3, 1.0), peak(2, 2, 1.0), peak(3, 3, 1.0)]
    assert metrics.pointing_game(maps, [BOX, BOX, BOX, NONE]) == pytest.approx(1 / 3)
    assert metrics.pointing_game(maps, [BOX, BOX, BOX, NONE], tolerance=1) == pytest.approx(2 / 3)


def test_undefined_metrics_are_null_with_a_reason_in_strict_json():
    """One test image: its AUC is undefined; metrics.json must stay strict JSON."""
    results = {
        "accuracy": 1.0,
        "auc": metrics.roc_auc(np.array([[1.0]]), np.array([[0.9]])),
        "cam": {"pointing_game": np.float32("nan"), "per_threshold": [0.5, float("inf")]},
    }
    cleaned = metrics.strict_json_metrics(results)
    text = json.dumps(cleaned, allow_nan=False)  # raises on NaN or infinity
    assert json.loads(text)["auc"] == {"class_0": None, "mean": None}
    assert cleaned["accuracy"] == 1.0 and cleaned["cam"]["per_threshold"] == [0.5, None]
    assert sorted(cleaned["undefined"]) == [
        "auc.class_0", "auc.mean", "cam.per_threshold.1", "cam.pointing_game",
    ]  # fmt: skip
    assert "one class only" in cleaned["undefined"]["auc.mean"]
    assert "undefined" not in metrics.strict_json_metrics({"accuracy": 0.5})


@pytest.mark.parametrize("seed", range(4))
def test_average_precision_equals_scikit_learns_with_ties(seed):
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 20, 5000).astype(np.float32) / 19  # many ties, as in unit maps
    truth = rng.random(5000) < 0.05 + 0.3 * scores
    expected = average_precision_score(truth, scores)
    assert metrics.average_precision(scores[truth], scores[~truth]) == pytest.approx(expected)
    masks = np.split(truth.reshape(50, 10, 10), 5)
    maps = np.split(scores.reshape(50, 10, 10), 5)
    assert metrics.pixel_average_precision(maps, masks) == pytest.approx(expected)
