"""Training-set size and class-balance variants, chosen at load time.

Pawlowski et al. 2019 trains on nMNIST subsets of 1,400 ... 22,552 images (§3, Fig. 5 and 6)
and on class-imbalanced sets with positive fractions 0.01 ... 0.99, oversampling
the under-represented class (App. C.1). A built TFDS split is balanced; `load`
takes the first examples of each class in the split's stored order (shuffled
once, deterministically, when TFDS wrote it), so a smaller set is a fixed
random subset of a larger one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import tfds_builders  # noqa: F401  (registers the needles_tf datasets with TFDS)


@dataclasses.dataclass(frozen=True)
class ClassQuota:
    """How many positives and negatives to take, and how often to show the minority."""

    positives: int
    negatives: int
    oversample_minority: bool = False

    @property
    def epoch_size(self) -> int:
        """Examples per pass: oversampling brings the minority up to the majority."""
        if self.oversample_minority and min(self.positives, self.negatives) > 0:
            return 2 * max(self.positives, self.negatives)
        return self.positives + self.negatives


def class_quota(
    size: int,
    positive_fraction: float,
    available_positives: int,
    available_negatives: int,
    oversample_minority: bool = False,
) -> ClassQuota:
    """Splits `size` into positives and negatives; errors name the argument at fault."""
    if size < 1:
        raise ValueError(f"size={size}: expected a positive number of examples.")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction={positive_fraction}: expected a value in [0, 1].")
    positives = round(size * positive_fraction)
    negatives = size - positives
    for name, wanted, available in (
        ("positives", positives, available_positives),
        ("negatives", negatives, available_negatives),
    ):
        if wanted > available:
            raise ValueError(
                f"size={size} with positive_fraction={positive_fraction} needs {wanted} "
                f"{name}, but the split holds {available}. For more nMNIST training "
                "images, load a config that reuses each 3, e.g. 'nmnist/canvas_256_train_x2'."
            )
    return ClassQuota(positives, negatives, oversample_minority)


def load(
    name: str,
    split: str,
    *,
    size: int | None = None,
    positive_fraction: float = 0.5,
    oversample_minority: bool = False,
    seed: int = 0,
    data_dir: str | None = None,
) -> tf.data.Dataset:
    """Loads a built binary TFDS split, optionally as a size/balance variant.

    Args:
      name: TFDS name with config, e.g. "nmnist/canvas_256".
      split: TFDS split name, e.g. "train".
      size: number of distinct examples to take; None keeps the whole split.
      positive_fraction: fraction of `size` with label 1.
      oversample_minority: repeat the minority class's examples until both
        classes are equally frequent (App. C.1); an epoch then has
        2 * max(positives, negatives) examples.
      seed: seed of the order in which the two classes are interleaved.
      data_dir: TFDS data directory.

    Returns:
      A `tf.data.Dataset` of feature dicts, as `tfds.load` gives them.
    """
    builder = tfds.builder(name, data_dir=data_dir)
    image_keys = [k for k, f in builder.info.features.items() if isinstance(f, tfds.features.Image)]
    undecoded = builder.as_dataset(
        split=split,
        shuffle_files=False,
        decoders={key: tfds.decode.SkipDecoding() for key in image_keys},
    )
    if size is not None:
        labels = np.fromiter(
            undecoded.map(lambda ex: ex["label"]).as_numpy_iterator(), dtype=np.int64
        )
        quota = class_quota(
            size,
            positive_fraction,
            int((labels == 1).sum()),
            int((labels == 0).sum()),
            oversample_minority,
        )
        undecoded = _mix_classes(undecoded, quota, seed)

    def decode(example):
        for key in image_keys:
            example[key] = builder.info.features[key].decode_example(example[key])
        return example

    return undecoded.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _mix_classes(dataset: tf.data.Dataset, quota: ClassQuota, seed: int) -> tf.data.Dataset:
    """The first quota.positives / quota.negatives of each class, randomly interleaved."""
    positives = dataset.filter(lambda ex: ex["label"] == 1).take(quota.positives)
    negatives = dataset.filter(lambda ex: ex["label"] == 0).take(quota.negatives)
    if quota.epoch_size > quota.positives + quota.negatives:
        majority = max(quota.positives, quota.negatives)
        positives = positives.repeat().take(majority)
        negatives = negatives.repeat().take(majority)
        weights = [0.5, 0.5]
    else:
        fraction = quota.positives / (quota.positives + quota.negatives)
        weights = [fraction, 1.0 - fraction]
    mixed = tf.data.Dataset.sample_from_datasets(
        [positives, negatives], weights=weights, seed=seed, stop_on_empty_dataset=False
    )
    return mixed.apply(tf.data.experimental.assert_cardinality(quota.epoch_size))
