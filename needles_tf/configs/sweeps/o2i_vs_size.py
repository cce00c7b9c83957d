"""The O2I limit vs training-set size (Pawlowski et al. 2019, §3 "O2I limit vs. dataset
size", Fig. 5a and 6).

    python -m needles_tf.sweep --sweep=o2i_vs_size:cpu --workdir=runs/o2i_vs_size
    python -m needles_tf.sweep --sweep=o2i_vs_size:paper --workdir=DIR --shard=1/16

The paper: max pooling, receptive field 33, training sets of 1,400 to 22,552 images on
every canvas, six seeds; more data generalizes better, the more so the smaller the
O2I, and the size needed for 70% and 85% validation accuracy grows fast as O2I falls
(the heatmap marks the smallest size reaching each). Sizes above 11,276 reuse each
training 3 twice: the `_train_x2` dataset, derived from the size. `cpu`: canvas_64
and canvas_128, three sizes, the short cpu_canvas64 recipe for 4 epochs, one seed.
"""

import ml_collections

from needles_tf.configs.sweeps import check_scale

SCALES = ("cpu", "paper")
ONE_USE = 11276  # training images a canvas_* config makes with each 3 used once


def use_each_3_twice_above_one_use(values: dict) -> dict:
    """Sizes above ONE_USE need the dataset's `_train_x2` config."""
    if values["train_size"] <= ONE_USE:
        return {}
    return {"dataset": values["dataset"] + "_train_x2"}


def get_config(scale: str = "cpu") -> ml_collections.ConfigDict:
    check_scale(scale)
    sweep = ml_collections.ConfigDict()
    if scale == "paper":
        sweep.config = "nmnist"
        sweep.fixed = (("model.pooling", "max"), ("export", False))
        canvases = (64, 128, 256, 512, 1024)
        sizes = (1400, 2819, 5638, 7500, 11276, 22552)
        seeds = tuple(range(6))
    else:
        sweep.config = "nmnist:cpu_canvas64"
        sweep.fixed = (
            ("model.pooling", "max"),
            ("epochs", 4),
            ("lr_decay_epochs", (3,)),
            ("export", False),
        )
        canvases = (64, 128)
        sizes = (1400, 2819, 5638)
        seeds = (0,)
    sweep.axes = (
        ("dataset", tuple(f"nmnist/canvas_{side}" for side in canvases)),
        ("train_size", sizes),
        ("seed", seeds),
    )
    sweep.derived = use_each_3_twice_above_one_use
    sweep.report = ml_collections.ConfigDict(
        {
            "kind": "heatmap",
            "x": "dataset",
            "series": "train_size",
            "metric": "validation.accuracy",
            "thresholds": (0.7, 0.85),
        }
    )
    return sweep
