"""What the three evaluators share: their inputs, the head of every result, the registry
they are chosen from, and the saliency maps of a batch."""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from needles_tf import bootstrap
from needles_tf.localization.methods import SaliencyMaps, SaliencyMethod
from needles_tf.registry import Registry


@dataclasses.dataclass(frozen=True)
class Settings:
    """The command line's knobs; each evaluator reads the ones it needs."""

    batch_size: int = 32
    taus: tuple[float, ...] = (0.5,)  # IoBB binarization thresholds
    alpha: float = 0.5  # T(IoBB): the IoBB an image needs to count as localized
    resamples: int = bootstrap.RESAMPLES  # of the 95% intervals; 0: none
    peak_distance: float = 14.0  # detection: pixels between two local maxima
    detection_threshold: float = 0.5  # detection: the score of a detection for P/R/F1


@dataclasses.dataclass(frozen=True)
class Inputs:
    """One evaluation: a float32 model, the examples of one split, where figures go."""

    model: keras.Model
    model_name: str  # the run directory, or the model's own name
    dataset: str  # TFDS name/config
    split: str
    data: tf.data.Dataset  # TFDS examples, as needles_tf.data.load gives them
    classes: int  # the model's sigmoid outputs
    class_names: tuple[str, ...]  # the dataset's names of those outputs
    methods: dict[str, SaliencyMethod]  # saliency methods by name (the first is drawn)
    out: pathlib.Path  # the output directory (figures; evaluate writes metrics.json)
    settings: Settings = Settings()


class Evaluator(NamedTuple):
    """`evaluate(inputs)` computes the result (see `result`) and draws its figures into
    `inputs.out`; `table(result)` is what the command line prints."""

    evaluate: Callable[[Inputs], dict[str, Any]]
    table: Callable[[dict[str, Any]], str]


# Task (declared by the dataset's TFDS BuilderConfig, tfds_builders/*) -> its evaluator.
EVALUATORS: Registry[Evaluator] = Registry("task")


def result(inputs: Inputs, images: int, **sections: Any) -> dict[str, Any]:
    """Every evaluator's result: model, dataset, split and the number of images evaluated
    first, then the evaluator's own sections. `examples` repeats `images` under the name
    that metrics.json files written before it (and the model cards) read."""
    return {
        "model": inputs.model_name,
        "dataset": inputs.dataset,
        "split": inputs.split,
        "images": images,
        "examples": images,
        **sections,
    }


def progress_bar(batches: tf.data.Dataset) -> keras.utils.Progbar:
    """A Keras progress bar over `batches`: redrawn on a terminal, one line at the end otherwise."""
    count = int(batches.cardinality())  # negative when unknown
    return keras.utils.Progbar(
        count if count >= 0 else None, verbose=1 if sys.stdout.isatty() else 2, unit_name="batch"
    )


def saliency_batch(
    model: keras.Model,
    images: np.ndarray,
    methods: dict[str, SaliencyMethod],
    k: int = 0,
    outputs: dict | None = None,
) -> dict[str, SaliencyMaps]:
    """Each method's raw and [0, 1] maps of class k, as NumPy (B, H, W): what evaluate scores.

    `outputs` are the model's for `images` (`predict_on_batch`, the compiled graph that
    the SavedModel also runs); maps on the model's grid are read from them.
    """
    if outputs is None:
        outputs = model.predict_on_batch(images)
    batch = {}
    for name, method in methods.items():
        maps = method(model, images, k=k, outputs=outputs)
        batch[name] = SaliencyMaps(
            raw=keras.ops.convert_to_numpy(maps.raw), unit=keras.ops.convert_to_numpy(maps.unit)
        )
    return batch
