"""One needle per image at most (nMNIST canvases, nCAMELYON): classification, calibration,
and per saliency method the weak localization of the needle.

Classification: accuracy, ROC AUC and expected calibration error. Localization, per
method: the localization AP of Pawlowski et al. 2019 App. C.4, continuous DICE, IoBB
accuracy at each tau, PxAP and the pointing game. Each with a 95% bootstrap interval
over images (`ci95`, needles_tf.bootstrap) unless `resamples` is 0. What the dataset
lacks (needle boxes, object masks) is skipped with the reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from needles_tf import bootstrap, metrics
from needles_tf.data import targets
from needles_tf.evaluation import figures, tables
from needles_tf.evaluation.common import (
    EVALUATORS,
    Evaluator,
    Inputs,
    progress_bar,
    result,
    saliency_batch,
)

CALIBRATION_BINS = 15


def evaluate_single_needle(inputs: Inputs) -> dict[str, Any]:
    """The result, with precision_recall.png, overlays.png and reliability.png in `out`."""
    model, methods, settings = inputs.model, inputs.methods, inputs.settings
    labels, probabilities, boxes, masks = [], [], [], []
    gallery = figures.Gallery()  # what overlays.png shows
    raw: dict[str, list[np.ndarray]] = {name: [] for name in methods}  # rank detections
    unit: dict[str, list[np.ndarray]] = {name: [] for name in methods}  # thresholded, drawn
    batches = targets.with_targets(inputs.data, inputs.classes).batch(settings.batch_size)
    bar = progress_bar(batches)
    for batch in batches.as_numpy_iterator():
        images = batch["image"].astype(np.float32)
        outputs = model.predict_on_batch(images)
        probability = np.asarray(outputs["probability"])
        start = len(boxes)
        labels.append(batch["label"])
        probabilities.append(probability)
        boxes.extend(batch.get("box", [None] * len(images)))
        masks.extend(batch.get("mask", []))
        for name, maps in saliency_batch(model, images, methods, 0, outputs).items():
            raw[name].extend(maps.raw)
            unit[name].extend(maps.unit)
        for i, (image, label, p) in enumerate(
            zip(batch["image"], labels[-1][:, 0], probability[:, 0], strict=True)
        ):
            gallery.offer(start + i, image, label, p)
        bar.add(1)
    labels, probabilities = np.concatenate(labels), np.concatenate(probabilities)

    resamples = settings.resamples
    counts = bootstrap.resample_counts(len(labels), resamples) if resamples else None
    found = result(
        inputs,
        len(labels),
        bootstrap_resamples=resamples,
        classification=_classification(labels, probabilities, counts),
        calibration={
            "bins": CALIBRATION_BINS,
            **metrics.calibration_curve(labels, probabilities, CALIBRATION_BINS),
        },
    )
    if all(box is None for box in boxes):
        found["localization"] = f"skipped: {inputs.dataset} has no {targets.BOX_FEATURE} feature"
    else:
        found["localization"] = {
            name: _localization(
                raw[name], unit[name], boxes, masks, settings.taus, settings.alpha, counts
            )
            for name in methods
        }
        figures.precision_recall(raw, boxes, inputs.out / "precision_recall.png")
    first = next(iter(methods))
    figures.overlays(gallery, unit[first], boxes, first, inputs.out / "overlays.png")
    figures.reliability(
        found["calibration"], found["classification"], inputs.out / "reliability.png"
    )
    return found


def _classification(labels, probabilities, counts) -> dict[str, Any]:
    """Accuracy, AUC and calibration error, with their 95% intervals when `counts` is given."""
    found = {
        "accuracy": metrics.accuracy(labels, probabilities),
        "auc": metrics.roc_auc(labels, probabilities),
        "expected_calibration_error": metrics.expected_calibration_error(
            labels, probabilities, CALIBRATION_BINS
        ),
    }
    if counts is not None:
        correct = ((probabilities >= 0.5) == (labels > 0.5)).reshape(len(labels), -1)
        found["ci95"] = {
            "accuracy": bootstrap.mean_interval(correct.mean(axis=1), counts),
            "auc": bootstrap.auc_interval(labels, probabilities, counts),
            "expected_calibration_error": bootstrap.calibration_error_interval(
                labels, probabilities, counts, CALIBRATION_BINS
            ),
        }
    return found


def _localization(raw, unit, boxes, masks, taus, alpha, counts) -> dict[str, Any]:
    """Detections ranked by the raw maps; DICE, IoBB and PxAP on the [0, 1] maps; per
    image first, so that `counts` (bootstrap resamples) give their 95% intervals."""
    confidences, hits, needles = metrics.image_detections(raw, boxes)
    pointing = metrics.pointing_hits(raw, boxes)

    def on_needles(score) -> np.ndarray:  # per image; NaN where there is no needle
        return np.asarray([score(i) if needle else np.nan for i, needle in enumerate(needles)])

    dice = on_needles(
        lambda i: metrics.continuous_dice(unit[i], metrics.box_mask(boxes[i], *unit[i].shape))
    )
    iobb = {
        f"iobb_accuracy@tau={tau}": on_needles(
            lambda i, tau=tau: float(metrics.iobb_hit(unit[i], boxes[i], tau, alpha))
        )
        for tau in taus
    }
    per_image = {"dice": dice, "pointing_game": pointing, **iobb}
    found = {
        "localization_ap": metrics.detection_average_precision(confidences, hits, needles),
        **{name: _nan_mean(values) for name, values in per_image.items()},
    }
    intervals = {}
    if counts is not None:
        intervals["localization_ap"] = bootstrap.detection_ap_interval(
            confidences, hits, needles, counts
        )
        intervals.update(
            {name: bootstrap.mean_interval(values, counts) for name, values in per_image.items()}
        )
    if masks:
        found["pxap"] = metrics.pixel_average_precision(unit, masks)
        if counts is not None:
            pairs = zip(unit, masks, strict=True)
            histograms = [bootstrap.pixel_histograms(u, m) for u, m in pairs]
            intervals["pxap"] = bootstrap.pxap_interval(
                np.stack([needle for needle, _ in histograms]),
                np.stack([background for _, background in histograms]),
                counts,
                exact=found["pxap"],
            )
    else:
        found["pxap"] = "skipped: the dataset has no needle_mask or lesion_mask feature"
    if counts is not None:
        found["ci95"] = intervals
    return found


def _nan_mean(values: np.ndarray) -> float:
    """The mean over the finite values (images with a needle); NaN when there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


EVALUATORS.register("single_needle")(Evaluator(evaluate_single_needle, tables.single_needle))
