"""Receptive field vs O2I (Pawlowski et al. 2019, §3 "Inductive bias", Fig. 7a).

    python -m needles_tf.sweep --sweep=receptive_field:cpu --workdir=runs/receptive_field

The paper: BagNets of receptive field 9, 33 and 177 with max pooling on every O2I of
nMNIST, six seeds; a field larger than a digit (33, 177) beats 9. `cpu`: canvas_256
(the smallest canvas a field of 177 fits) from scratch with the cpu_canvas256 recipe
(instance head, sparse steps), 2,819 training images, 4 epochs, one seed (about 40
minutes).
"""

import ml_collections

from needles_tf.configs.sweeps import CPU_SHORT, check_scale


def get_config(scale: str = "cpu") -> ml_collections.ConfigDict:
    check_scale(scale)
    sweep = ml_collections.ConfigDict()
    if scale == "paper":
        sweep.config = "nmnist"
        sweep.fixed = (("export", False),)
        canvases = (256, 512, 1024)  # a field of 177 needs a canvas at least that wide
        seeds = tuple(range(6))
    else:
        sweep.config = "nmnist:cpu_canvas256"
        # from scratch at cpu_quick's rate (cpu_canvas256 fine-tunes a canvas_64 run)
        sweep.fixed = (*CPU_SHORT, ("learning_rate", 3e-3))
        canvases = (256,)
        seeds = (0,)
    sweep.axes = (
        ("dataset", tuple(f"nmnist/canvas_{side}" for side in canvases)),
        ("model.receptive_field", (9, 33, 177)),
        ("seed", seeds),
    )
    sweep.report = ml_collections.ConfigDict(
        {
            "kind": "bars",
            "x": "dataset",
            "series": "model.receptive_field",
            "metric": "test.accuracy",
        }
    )
    return sweep
