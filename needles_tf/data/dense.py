"""Many-needles examples -> (image, per-cell target map) batches for dense localization.

A canvas of nmnist/many_needles_* boxes every 3 on it and orders them at random
(`needles/annotation_rank`); annotating a fraction f keeps the 3s of rank
< ceil(f · n), so every fraction comes from one build and smaller ones are subsets
of larger ones. Each annotated 3 is a point at its box centre; the target of a grid
cell (receptive field R, stride S: it sees pixels [S·i, S·i + R)) is 1 if its
window centre lies within `radius` pixels of an annotated point along both axes,
else 0: what is not annotated counts as background, as in sparse-shot learning.

Training takes one random crop per canvas and pass (its grid is a window of the
canvas's grid, so the targets are cropped with it); validation and test use whole
canvases with every 3 annotated.
"""

from __future__ import annotations

import tensorflow as tf

from needles_tf.data.pipeline import _shard_by_data
from needles_tf.data.subsets import load
from needles_tf.grid import cell_centre

NEEDLES_FEATURE = "needles"


def grid_size(pixels: int, receptive_field: int, stride: int) -> int:
    """Cells along an axis of `pixels` input pixels (unpadded windows)."""
    return (pixels - receptive_field) // stride + 1


def annotated_centres(needles: dict, fraction: float, height, width) -> tf.Tensor:
    """(m, 2) float32 (row, col) pixel centres of the annotated needles."""
    boxes = needles["bbox"]
    count = tf.shape(boxes)[0]
    keep = tf.cast(tf.math.ceil(fraction * tf.cast(count, tf.float32)), tf.int32)
    boxes = tf.boolean_mask(boxes, needles["annotation_rank"] < keep)
    scale = tf.cast(tf.stack([height, width]), tf.float32)
    return (boxes[:, :2] + boxes[:, 2:]) / 2.0 * scale


def cell_targets(centres, rows: int, cols: int, receptive_field: int, stride: int, radius):
    """(rows, cols, 1) float32: 1 where a cell's window centre is within `radius` pixels
    (Chebyshev) of one of `centres`."""
    cell_y = cell_centre(tf.range(rows, dtype=tf.float32), receptive_field, stride)
    cell_x = cell_centre(tf.range(cols, dtype=tf.float32), receptive_field, stride)
    near_y = tf.abs(cell_y[None, :] - centres[:, :1]) <= radius  # (m, rows)
    near_x = tf.abs(cell_x[None, :] - centres[:, 1:]) <= radius  # (m, cols)
    hit = tf.reduce_any(near_y[:, :, None] & near_x[:, None, :], axis=0)
    return tf.cast(hit, tf.float32)[..., None]


def dense_example(example: dict, fraction: float, geometry: tuple[int, int], radius: float):
    """(image uint8 (H, W, C), targets (h, w, 1)) of a whole canvas."""
    receptive_field, stride = geometry
    image = example["image"]
    height, width = image.shape[0], image.shape[1]
    centres = annotated_centres(example[NEEDLES_FEATURE], fraction, height, width)
    rows, cols = (grid_size(n, receptive_field, stride) for n in (height, width))
    return image, cell_targets(centres, rows, cols, receptive_field, stride, radius)


def random_crop(image, targets, crop: int, geometry: tuple[int, int], seed):
    """A crop of `crop` x `crop` pixels starting on a cell boundary, and its cells."""
    receptive_field, stride = geometry
    cells = grid_size(crop, receptive_field, stride)
    rows, cols = tf.shape(targets)[0], tf.shape(targets)[1]
    start = tf.random.stateless_uniform([2], seed, maxval=tf.int32.max, dtype=tf.int32) % tf.stack(
        [rows - cells + 1, cols - cells + 1]
    )
    top, left = start[0], start[1]
    image = image[top * stride : top * stride + crop, left * stride : left * stride + crop]
    targets = targets[top : top + cells, left : left + cells]
    return image, targets


def check_dense_dataset(name: str, spec) -> None:
    if NEEDLES_FEATURE not in spec:
        raise ValueError(
            f"--dataset={name}: dense localization needs every needle's box "
            f"('{NEEDLES_FEATURE}' feature), e.g. nmnist/many_needles_512."
        )


def training_stream(
    name: str,
    fraction: float,
    geometry: tuple[int, int],
    radius: float,
    crop: int,
    batch_size: int,
    seed: int,
    data_dir: str | None,
) -> tuple[tf.data.Dataset, int]:
    """An endless, deterministic stream of (crop, targets) batches and batches per epoch.

    The k-th batch is the same in every run (seeded shuffles, crops keyed on the
    element's position in the stream): resuming at step k is `stream.skip(k)`.
    """
    data = load(name, "train", data_dir=data_dir)
    check_dense_dataset(name, data.element_spec)
    examples = int(data.cardinality())
    if examples < batch_size:
        raise ValueError(
            f"--batch_size={batch_size}: the training split of {name} holds only "
            f"{examples} canvases."
        )
    size = data.element_spec["image"].shape[0]
    if not geometry[0] <= crop <= size:
        raise ValueError(
            f"--config.crop_size={crop}: expected between the receptive field "
            f"{geometry[0]} and the canvas side {size}."
        )
    data = data.map(
        lambda ex: dense_example(ex, fraction, geometry, radius),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).cache()
    data = data.shuffle(examples, seed=seed, reshuffle_each_iteration=True).repeat()
    data = data.enumerate().map(
        lambda index, pair: random_crop(
            *pair, crop, geometry, tf.stack([tf.constant(seed, tf.int64), index])
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    data = data.batch(batch_size, drop_remainder=True)
    return _shard_by_data(data.prefetch(tf.data.AUTOTUNE)), examples // batch_size


def evaluation_batches(
    name: str,
    split: str,
    geometry: tuple[int, int],
    radius: float,
    batch_size: int,
    data_dir: str | None,
) -> tf.data.Dataset:
    """Whole canvases of `split` with every needle annotated, in order, cached."""
    data = load(name, split, data_dir=data_dir)
    check_dense_dataset(name, data.element_spec)
    data = data.map(
        lambda ex: dense_example(ex, 1.0, geometry, radius), num_parallel_calls=tf.data.AUTOTUNE
    )
    return _shard_by_data(data.cache().batch(batch_size).prefetch(tf.data.AUTOTUNE))
