"""Examples with their localization targets under fixed names.

The one place that knows the datasets' feature names for boxes and masks:

    with_targets(data, K)   {"image", "label" (K,), "box" (4,) if the dataset has needle
                            boxes (all zeros: none), "mask" (H, W) bool if it has object masks}
    with_findings(data, K)  {"image", "label" (K,), "boxes" (MAX_BOXES, 4), "finding"
                            (MAX_BOXES,) int32: the class each box marks, -1 for padding}
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from needles_tf.data.pipeline import to_example
from needles_tf.data.subsets import load

BOX_FEATURE = "needle_bbox"  # nMNIST and nCAMELYON: the needle's box
MASK_FEATURES = ("needle_mask", "lesion_mask")  # nMNIST's digit, nCAMELYON's lesion pixels
FINDINGS_FEATURE = "bboxes"  # ChestX-ray14: boxes, each with the finding it marks
MAX_BOXES = 16  # boxes per image kept for per-finding localization (ChestX-ray14 has <= 3)


def has_findings(data: tf.data.Dataset) -> bool:
    """Whether examples carry boxes per finding (multi-label localization)."""
    return FINDINGS_FEATURE in data.element_spec


def with_targets(data: tf.data.Dataset, num_classes: int) -> tf.data.Dataset:
    """Examples as {"image", "label"[, "box"][, "mask"]}."""
    spec = data.element_spec
    mask_feature = next((name for name in MASK_FEATURES if name in spec), None)

    def targets(example):
        image, label = to_example(example, num_classes)
        record = {"image": image, "label": label}
        if BOX_FEATURE in spec:
            record["box"] = example[BOX_FEATURE]
        if mask_feature is not None:
            record["mask"] = example[mask_feature][..., 0] > 0
        return record

    return data.map(targets, num_parallel_calls=tf.data.AUTOTUNE)


def with_findings(data: tf.data.Dataset, num_classes: int) -> tf.data.Dataset:
    """Examples as {"image", "label", "boxes", "finding"}, boxes padded to MAX_BOXES."""

    def findings(example):
        image, label = to_example(example, num_classes)
        boxes = example[FINDINGS_FEATURE]["bbox"][:MAX_BOXES]
        finding = tf.cast(example[FINDINGS_FEATURE]["label"][:MAX_BOXES], tf.int32)
        pad = MAX_BOXES - tf.shape(finding)[0]
        return {
            "image": image,
            "label": label,
            "boxes": tf.pad(boxes, [[0, pad], [0, 0]]),
            "finding": tf.pad(finding, [[0, pad]], constant_values=-1),
        }

    return data.map(findings, num_parallel_calls=tf.data.AUTOTUNE)


def first_examples(
    name: str, split: str, count: int, num_classes: int, data_dir: str | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The first `count` images of `split`, their needle boxes (None without) and labels."""
    examples = with_targets(load(name, split, data_dir=data_dir), num_classes)
    batch = next(examples.batch(count).as_numpy_iterator())
    return batch["image"], batch.get("box"), batch["label"]
