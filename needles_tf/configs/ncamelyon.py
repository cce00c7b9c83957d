"""nCAMELYON experiments (Pawlowski et al. 2019, §3, App. A.2): BagNet on RGB crops of slides.

    python -m needles_tf.train --config=ncamelyon --tfds_manual_dir=CAMELYON17
    python -m needles_tf.train --config=ncamelyon \
        --config.dataset=ncamelyon/crop512_o2i_0p1_1 --config.model.pooling=attention

The training protocol is nMNIST's (needles_tf/configs/nmnist.py); the model sees three
channels and has the 9x9 receptive field that worked best on nCAMELYON in the
paper (Fig. 7b: texture carries the class), with max pooling (Fig. 4).
"""

import ml_collections

from needles_tf.configs import finished, nmnist

DATASETS = ("ncamelyon",)

# nMNIST's short schedules that keep the family's dataset (cpu_quick, cpu_canvas64): the
# same recipes on nCAMELYON crops.
PRESETS = {name: preset for name, preset in nmnist.PRESETS.items() if "dataset" not in preset}


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    config = nmnist.get_config()
    config.unlock()
    config.dataset = "ncamelyon/crop256_o2i_1_10"  # TFDS name/config
    config.model.input_channels = 3
    config.model.receptive_field = 9
    return finished(config, preset, PRESETS)
