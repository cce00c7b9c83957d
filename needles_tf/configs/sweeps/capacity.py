"""The O2I limit vs capacity (Pawlowski et al. 2019, §3 "O2I limit vs. capacity", Fig. 5b).

    python -m needles_tf.sweep --sweep=capacity:cpu --workdir=runs/capacity
    python -m needles_tf.sweep --sweep=capacity:paper --workdir=DIR --shard=1/8

The paper: the BagNet's filters scaled by s = 1/4, 1/2, 1 and 2, max pooling,
receptive field 33, 11,276 training images, every canvas, six seeds; accuracy grows
with capacity, the more so the smaller the O2I. `cpu`: s = 1/8, 1/4 and 1/2 on
canvas_64 and canvas_128, 2,819 images, 4 epochs of the cpu_canvas64 recipe, two seeds.
"""

import ml_collections

from needles_tf.configs.sweeps import CPU_SHORT, check_scale


def get_config(scale: str = "cpu") -> ml_collections.ConfigDict:
    check_scale(scale)
    sweep = ml_collections.ConfigDict()
    if scale == "paper":
        sweep.config = "nmnist"
        sweep.fixed = (("model.pooling", "max"), ("train_size", 11276), ("export", False))
        canvases = (64, 128, 256, 512, 1024)
        widths = (0.25, 0.5, 1.0, 2.0)
        seeds = tuple(range(6))
    else:
        sweep.config = "nmnist:cpu_canvas64"
        sweep.fixed = (("model.pooling", "max"), *CPU_SHORT)
        canvases = (64, 128)
        widths = (0.125, 0.25, 0.5)
        seeds = (0, 1)
    sweep.axes = (
        ("dataset", tuple(f"nmnist/canvas_{side}" for side in canvases)),
        ("model.width", widths),
        ("seed", seeds),
    )
    sweep.report = ml_collections.ConfigDict(
        {
            "kind": "bars",
            "x": "dataset",
            "series": "model.width",
            "metric": "test.accuracy",
            "chance": 0.5,
        }
    )
    return sweep
