"""nCAMELYON experiments (Pawlowski et al. 2019, §3, App. A.2): BagNet on RGB crops of slides.

    python -m needles_tf.train --config=ncamelyon --tfds_manual_dir=CAMELYON17
    python -m needles_tf.train --config=ncamelyon \
        --config.dataset=ncamelyon/crop512_o2i_0p1_1 --config.model.pooling=attention

The training protocol is nMNIST's (needles_tf/configs/nmnist.py); the model sees three
channels and has the 9x9 receptive field that worked best on nCAMELYON in the
paper (Fig. 7b: texture carries the class), with max pooling (Fig. 4). The
`cpu_quick` preset is nMNIST's.
"""

import ml_collections

from needles_tf.configs import apply_preset, nmnist

PRESETS = nmnist.PRESETS


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    config = nmnist.get_config()
    config.dataset = "ncamelyon/crop256_o2i_1_10"  # TFDS name/config
    config.model.input_channels = 3
    config.model.receptive_field = 9
    if preset:
        apply_preset(config, preset, PRESETS)
    return config
