"""Accuracy vs O2I (Pawlowski et al. 2019, §3 "Image-level annotations", Fig. 4).

    python -m needles_tf.sweep --sweep=o2i:cpu --workdir=runs/o2i
    python -m needles_tf.sweep --sweep=o2i:paper --workdir=DIR --shard=1/5

The paper: the best nMNIST model (max pooling, receptive field 33) on every canvas,
six seeds; reasonable accuracy above an O2I of 0.3% (canvas_512), near chance below.
`cpu`: canvas_64 and canvas_128 (O2I 19% and 4.8%), 2,819 training images, the short
cpu_canvas64 recipe for 4 epochs, two seeds.
"""

import ml_collections

from needles_tf.configs.sweeps import CPU_SHORT, check_scale


def get_config(scale: str = "cpu") -> ml_collections.ConfigDict:
    check_scale(scale)
    sweep = ml_collections.ConfigDict()
    if scale == "paper":
        sweep.config = "nmnist"
        sweep.fixed = (("model.pooling", "max"), ("export", False))
        canvases = (64, 128, 256, 512, 1024)
        seeds = tuple(range(6))
    else:
        sweep.config = "nmnist:cpu_canvas64"
        sweep.fixed = (("model.pooling", "max"), *CPU_SHORT)
        canvases = (64, 128)
        seeds = (0, 1)
    sweep.axes = (
        ("dataset", tuple(f"nmnist/canvas_{side}" for side in canvases)),
        ("seed", seeds),
    )
    sweep.report = ml_collections.ConfigDict(
        {"kind": "line", "x": "dataset", "series": "", "metric": "test.accuracy", "chance": 0.5}
    )
    return sweep
