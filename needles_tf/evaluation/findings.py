"""Multi-label images with boxes per finding (ChestX-ray14): Yao et al. 2018 Tables 2-3.

AUC per finding; and per saliency method and finding with boxes, the continuous DICE of
the finding's map against the union of its boxes and the IoBB accuracy at each tau, over
the images that have such a box.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from needles_tf import metrics
from needles_tf.data import targets
from needles_tf.evaluation import tables
from needles_tf.evaluation.common import (
    EVALUATORS,
    Evaluator,
    Inputs,
    progress_bar,
    result,
    saliency_batch,
)


def evaluate_findings(inputs: Inputs) -> dict[str, Any]:
    """The result: `classification` (label accuracy, AUC per finding and their mean) and
    `localization` (per method, per finding: images, dice, iobb_accuracy@tau=...)."""
    model, methods, settings = inputs.model, inputs.methods, inputs.settings
    names, classes, taus = inputs.class_names, inputs.classes, settings.taus
    labels, probabilities = [], []
    dice = {name: {} for name in methods}
    hits = {name: {} for name in methods}
    batches = targets.with_findings(inputs.data, classes).batch(settings.batch_size)
    bar = progress_bar(batches)
    for batch in batches.as_numpy_iterator():
        images = batch["image"].astype(np.float32)
        boxes, finding = batch["boxes"], batch["finding"]
        labels.append(batch["label"])
        outputs = model.predict_on_batch(images)
        probabilities.append(np.asarray(outputs["probability"]))
        for k in np.unique(finding[finding >= 0]):
            rows = np.nonzero((finding == k).any(axis=1))[0]
            selected = {key: np.asarray(value)[rows] for key, value in outputs.items()}
            batch_maps = saliency_batch(model, images[rows], methods, int(k), selected)
            for name, maps in batch_maps.items():
                for row, unit in zip(rows, maps.unit, strict=True):
                    own = boxes[row][finding[row] == k]
                    truth = np.max([metrics.box_mask(b, *unit.shape) for b in own], axis=0)
                    dice[name].setdefault(names[k], []).append(metrics.continuous_dice(unit, truth))
                    for tau in taus:
                        hit = any(metrics.iobb_hit(unit, b, tau, settings.alpha) for b in own)
                        hits[name].setdefault((names[k], tau), []).append(hit)
        bar.add(1)
    labels, probabilities = np.concatenate(labels), np.concatenate(probabilities)
    auc = metrics.roc_auc(labels, probabilities)
    return result(
        inputs,
        len(labels),
        classification={
            "accuracy": metrics.accuracy(labels, probabilities),
            "auc": {
                **{names[k]: auc[f"class_{k}"] for k in range(classes) if f"class_{k}" in auc},
                "mean": auc["mean"],
            },
        },
        localization={
            name: {
                finding: {
                    "images": len(values),
                    "dice": float(np.mean(values)),
                    **{
                        f"iobb_accuracy@tau={tau}": float(np.mean(hits[name][(finding, tau)]))
                        for tau in taus
                    },
                }
                for finding, values in dice[name].items()
            }
            for name in methods
        },
    )


EVALUATORS.register("findings")(Evaluator(evaluate_findings, tables.findings))
