"""Evaluators, one per task that a dataset declares (the `task` of its TFDS BuilderConfig
in tfds_builders/*), chosen once by `evaluator_for(builder)`:

    single_needle   nMNIST canvases, nCAMELYON: classification, calibration and weak
                    localization per saliency method (single_needle.py)
    findings        ChestX-ray14: AUC per finding, DICE and IoBB per finding (findings.py)
    detection       nmnist/many_needles_*: every needle as a local maximum, P/R/F1 and
                    AP (detection.py)

Each returns a result of one shape (common.result): model, dataset, split and images
first, then its own sections; figures.py draws the figures, tables.py the printed tables.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from needles_tf.evaluation import detection, findings, single_needle
from needles_tf.evaluation.common import (
    EVALUATORS,
    Evaluator,
    Inputs,
    Settings,
    result,
    saliency_batch,
)

__all__ = [
    "EVALUATORS",
    "Evaluator",
    "Inputs",
    "Settings",
    "declared_task",
    "detection",
    "evaluator_for",
    "findings",
    "result",
    "saliency_batch",
    "single_needle",
]


def declared_task(builder: tfds.core.DatasetBuilder) -> str:
    """The task that `builder`'s config declares; a one-line ValueError when it declares none."""
    config = builder.builder_config
    task = getattr(config, "task", None)
    if task is None:
        name = builder.name + (f"/{config.name}" if config is not None else "")
        raise ValueError(
            f"--dataset={name}: declares no task (a `task` on its TFDS BuilderConfig, one of "
            f"{sorted(EVALUATORS)}), so needles_tf cannot tell how to evaluate on it."
        )
    return task


def evaluator_for(builder: tfds.core.DatasetBuilder) -> Evaluator:
    """The evaluator of the task that `builder`'s dataset declares."""
    return EVALUATORS.get_or_raise(declared_task(builder))
