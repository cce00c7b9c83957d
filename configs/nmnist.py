"""nMNIST experiments (paper 000 §3): BagNet extractor, global pooling, binary task.

Override from the command line, e.g. `--config=configs/nmnist.py --config.model.pooling=lse_lba`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict(
        {
            "extractor": "bagnet",
            "receptive_field": 33,  # best nMNIST receptive field of paper 000 (§3, Fig. 4)
            "width": 1.0,  # capacity s
            "input_channels": 1,
            "head": "embedding",
            "pooling": "max",
            "pooling_kwargs": {},
            "num_classes": 1,
            "dtype_policy": "mixed_bfloat16",  # bf16 matrix units; float32 statistics and logits
        }
    )
    return config
