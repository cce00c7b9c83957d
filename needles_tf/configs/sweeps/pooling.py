"""Global pooling vs O2I (Pawlowski et al. 2019, §3 "Global pooling operations", Fig. 7c, 8).

    python -m needles_tf.sweep --sweep=pooling:cpu --workdir=runs/pooling
    python -m needles_tf.sweep --sweep=pooling:paper --workdir=DIR --shard=1/8

The paper: max, logsumexp, mean and soft attention pooling after the RF-33 BagNet,
every O2I of nMNIST, six seeds, its protocol (RMSProp 5e-5, 200 epochs); all poolings
alike at large O2I, max best at small ones. `cpu`: canvas_64 on 2,819 training images
and canvas_128 on 5,638 (the smallest size of o2i_vs_size:cpu on which max pooling
leaves chance there), the short cpu_canvas64 recipe for 4 epochs, one seed (an hour on
2 cores of an AMD EPYC Zen 4, 13 minutes each canvas_128 point; 80 on an Intel Xeon).
"""

import ml_collections

from needles_tf.configs.sweeps import CPU_SHORT, check_scale, cpu_train_size


def get_config(scale: str = "cpu") -> ml_collections.ConfigDict:
    check_scale(scale)
    sweep = ml_collections.ConfigDict()
    poolings = ("max", "lse", "mean", "attention")
    if scale == "paper":
        sweep.config = "nmnist"
        sweep.fixed = (("export", False),)
        canvases = (64, 128, 256, 512, 1024)
        seeds = tuple(range(6))
    else:
        sweep.config = "nmnist:cpu_canvas64"
        sweep.fixed = CPU_SHORT
        sweep.derived = cpu_train_size
        canvases = (64, 128)
        seeds = (0,)
    sweep.axes = (
        ("dataset", tuple(f"nmnist/canvas_{side}" for side in canvases)),
        ("model.pooling", poolings),
        ("seed", seeds),
    )
    sweep.report = ml_collections.ConfigDict(
        {
            "kind": "bars",
            "x": "dataset",
            "series": "model.pooling",
            "metric": "test.accuracy",
            "chance": 0.5,
        }
    )
    return sweep
