"""nCAMELYON experiments (Pawlowski et al. 2019, §3, App. A.2): BagNet on RGB crops of slides.

    python -m needles_tf.train --config=configs/ncamelyon.py --tfds_manual_dir=CAMELYON17
    python -m needles_tf.train --config=configs/ncamelyon.py \
        --config.dataset=ncamelyon/crop512_o2i_0p1_1 --config.model.pooling=attention

The training protocol is nMNIST's (configs/nmnist.py); the model sees three
channels and has the 9x9 receptive field that worked best on nCAMELYON in the
paper (Fig. 7b: texture carries the class), with max pooling (Fig. 4). The
`cpu_quick` preset is nMNIST's.
"""

import importlib.util
import pathlib

import ml_collections

_spec = importlib.util.spec_from_file_location(
    "nmnist_config", pathlib.Path(__file__).with_name("nmnist.py")
)
_nmnist = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_nmnist)

PRESETS = _nmnist.PRESETS
apply_preset = _nmnist.apply_preset


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    config = _nmnist.get_config()
    config.dataset = "ncamelyon/crop256_o2i_1_10"  # TFDS name/config
    config.model.input_channels = 3
    config.model.receptive_field = 9
    if preset:
        apply_preset(config, preset)
    return config
