r"""How much PxAP a saliency map on a model's grid can reach at all.

    python benchmarks/grid_pxap_ceiling.py --dataset=nmnist/canvas_64 --model=nmnist_canvas64

A grid map (CAM, instance map, PixelCAM on the grid) has one value per cell, spread
over the input by `saliency_to_input`. The best such map knows the mask: each
cell's value is the fraction of its receptive-field window that is needle. This
prints that oracle's PxAP over the split (each image's map divided by its peak, as
the unit maps are), next to the share of pixels that are needle, which is the PxAP
of a constant map. A method on the grid cannot be expected to pass the oracle;
to pass it, the map needs features finer than the grid.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import app, flags

from needles_tf import models
from needles_tf.data import targets
from needles_tf.data.subsets import load
from needles_tf.localization.upsample import saliency_to_input
from needles_tf.metrics import pixel_average_precision

_DATASET = flags.DEFINE_string("dataset", "nmnist/canvas_64", "TFDS name/config with masks.")
_SPLIT = flags.DEFINE_string("split", "test", "Split.")
_MODEL = flags.DEFINE_string("model", "nmnist_canvas64", "Whose grid geometry (rf, stride).")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory.")


def oracle_maps(masks: np.ndarray, receptive_field: int, stride: int) -> np.ndarray:
    """(B, H, W) bool masks -> (B, H, W) grid maps: window fractions, upsampled, peak 1."""
    height, width = masks.shape[1:]
    windows = tf.nn.avg_pool2d(
        masks[..., None].astype(np.float32), receptive_field, stride, padding="VALID"
    )
    maps = np.asarray(saliency_to_input(windows, height, width, receptive_field, stride))[..., 0]
    return maps / np.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-12)


def main(argv: list[str]) -> None:
    del argv
    receptive_field, stride = models.load(_MODEL.value).geometry
    data = targets.with_targets(
        load(_DATASET.value, _SPLIT.value, data_dir=_TFDS_DATA_DIR.value), 1
    )
    maps, masks = [], []
    for batch in data.batch(256).as_numpy_iterator():
        maps += list(oracle_maps(batch["mask"], receptive_field, stride))
        masks += list(batch["mask"])
    share = float(np.mean(np.concatenate([m.ravel() for m in masks])))
    print(f"{_DATASET.value} {_SPLIT.value}: {len(masks)} images, needle pixels {share:.4f}")
    print(
        f"PxAP of the oracle grid map (receptive field {receptive_field}, stride {stride}): "
        f"{pixel_average_precision(maps, masks):.4f}"
    )


if __name__ == "__main__":
    app.run(main)
