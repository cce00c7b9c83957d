"""Receptive field vs O2I (Pawlowski et al. 2019, §3 "Inductive bias", Fig. 7a).

    python -m needles_tf.sweep --sweep=receptive_field:cpu --workdir=runs/receptive_field
    python -m needles_tf.sweep --sweep=receptive_field:paper --workdir=DIR --shard=1/6

The paper: BagNets of receptive field 9, 33 and 177 with max pooling on every O2I of
nMNIST, six seeds; a field at least a digit's size (33, 177) beats 9. `cpu`: fields 9
and 33 around the 28-pixel digit on canvas_64, 2,819 training images, the short
cpu_canvas64 recipe for 4 epochs, two seeds (9 to 12 minutes). A field of 177 needs
canvases of 256 pixels or more (the BagNet pads nothing), and none learned there from
scratch within the cpu budget: the cpu_canvas256 recipe (sparse steps) on 2,819
images still gave every validation image the same output after 2 of 4 epochs (15
minutes on 2 cores), and a dense step costs 4 times canvas_128's. So
177 is in the paper scale only.
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
        fields = (9, 33, 177)
        seeds = tuple(range(6))
    else:
        sweep.config = "nmnist:cpu_canvas64"
        sweep.fixed = CPU_SHORT
        canvases = (64,)
        fields = (9, 33)
        seeds = (0, 1)
    sweep.axes = (
        ("dataset", tuple(f"nmnist/canvas_{side}" for side in canvases)),
        ("model.receptive_field", fields),
        ("seed", seeds),
    )
    sweep.report = ml_collections.ConfigDict(
        {
            "kind": "bars",
            "x": "dataset",
            "series": "model.receptive_field",
            "metric": "test.accuracy",
            "chance": 0.5,
        }
    )
    return sweep
