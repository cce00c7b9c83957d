r"""Several saliency maps of one model side by side on the same validation images.

    python benchmarks/saliency_gallery.py --model=nmnist_canvas64_pixelcam \
        --saliency=pixelcam,cam,gradient,sparse_inversion --images=6 \
        --out=docs/results/pixelcam/maps.png

Rows are the first positive validation images of the model's dataset (then
negatives, --negatives of them); columns the image and each method's [0, 1] map
over it (what evaluate thresholds for DICE and PxAP), the needle's box in green.
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from absl import app, flags

from needles_tf import models
from needles_tf.atomic import atomic_path
from needles_tf.data import targets
from needles_tf.evaluate import saliency_batch
from needles_tf.localization.methods import get_saliency_method
from needles_tf.metadata import read_metadata
from needles_tf.packaged import keras_file
from needles_tf.plots import saliency_overlay

_MODEL = flags.DEFINE_string("model", "nmnist_canvas64_pixelcam", "Packaged name or .keras.")
_SALIENCY = flags.DEFINE_list(
    "saliency", ["pixelcam", "cam", "gradient", "sparse_inversion"], "Methods, in columns."
)
_IMAGES = flags.DEFINE_integer("images", 6, "Positive validation images, in rows.")
_NEGATIVES = flags.DEFINE_integer("negatives", 1, "Negative images after them.")
_OUT = flags.DEFINE_string("out", "docs/saliency_gallery.png", "The PNG written.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory.")
SEARCHED = 256  # validation images looked through for positives and negatives


def main(argv: list[str]) -> None:
    del argv
    model = models.load(_MODEL.value)
    dataset = read_metadata(keras_file(_MODEL.value))["dataset"]
    methods = {name: get_saliency_method(name) for name in _SALIENCY.value}
    images, boxes, labels = targets.first_examples(
        dataset, "validation", SEARCHED, model.head.num_classes, _TFDS_DATA_DIR.value
    )
    positive = np.flatnonzero(labels[:, 0] > 0.5)[: _IMAGES.value]
    negative = np.flatnonzero(labels[:, 0] <= 0.5)[: _NEGATIVES.value]
    rows = np.concatenate([positive, negative])
    images, boxes = images[rows].astype(np.float32), boxes[rows]
    outputs = model.predict_on_batch(images)
    maps = saliency_batch(model, images, methods, outputs=outputs)
    probability = np.asarray(outputs["probability"])[:, 0]

    columns = 1 + len(methods)
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(1.7 * columns, 1.75 * len(rows)), squeeze=False
    )
    for r in range(len(rows)):
        axes[r, 0].imshow(images[r].astype(np.uint8)[..., 0], cmap="gray", vmin=0, vmax=255)
        axes[r, 0].set_title(f"p = {probability[r]:.2f}", fontsize=8)
        for c, name in enumerate(methods, start=1):
            axes[r, c].imshow(saliency_overlay(images[r], maps[name].unit[r], boxes[r]))
            if r == 0:
                axes[r, c].set_title(name, fontsize=9)
        for axis in axes[r]:
            axis.axis("off")
    name = pathlib.Path(_MODEL.value)
    name = name.parent.name if name.suffix == ".keras" else name.name  # a run's folder
    figure.suptitle(f"{name} on {dataset} validation images; green: the needle's box", fontsize=10)
    figure.tight_layout()
    out = pathlib.Path(_OUT.value)
    with atomic_path(out) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    print(f"Wrote {out}")


if __name__ == "__main__":
    app.run(main)
