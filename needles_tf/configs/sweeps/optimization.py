"""Optimization at low O2I (Pawlowski et al. 2019, §3 "Optimization", Fig. 9).

    python -m needles_tf.sweep --sweep=optimization:cpu --workdir=runs/optimization
    python -m needles_tf.sweep --sweep=optimization:paper --workdir=DIR --shard=1/8

The paper: with about 11k training images, the epochs each pooling takes to fit the
training set (accuracy above 99%) and the share of six seeds that do; fitting gets
harder as O2I falls, max pooling is the most robust, and the seeds of a setting all
succeed or all fail. `cpu`: max and mean pooling on canvas_64 and canvas_128, 2,819
images, 8 epochs of the cpu_canvas64 recipe without decay, three seeds.
"""

import ml_collections

from needles_tf.configs.sweeps import check_scale


def get_config(scale: str = "cpu") -> ml_collections.ConfigDict:
    check_scale(scale)
    sweep = ml_collections.ConfigDict()
    if scale == "paper":
        sweep.config = "nmnist"
        sweep.fixed = (("train_size", 11276), ("export", False))
        canvases = (64, 128, 256, 512, 1024)
        poolings = ("max", "lse", "mean", "attention")
        seeds = tuple(range(6))
    else:
        sweep.config = "nmnist:cpu_canvas64"
        sweep.fixed = (
            ("train_size", 2819),
            ("epochs", 8),
            ("lr_decay_epochs", ()),
            ("export", False),
        )
        canvases = (64, 128)
        poolings = ("max", "mean")
        seeds = (0, 1, 2)
    sweep.axes = (
        ("dataset", tuple(f"nmnist/canvas_{side}" for side in canvases)),
        ("model.pooling", poolings),
        ("seed", seeds),
    )
    sweep.report = ml_collections.ConfigDict(
        {"kind": "fit", "x": "dataset", "series": "model.pooling", "metric": "test.accuracy"}
    )
    return sweep
