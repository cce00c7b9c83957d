"""Yao et al. 2018: multi-resolution ResNet/DenseNet fusion, instance head, LSE-LBA, ChestX-ray14.

    python -m needles_tf.train --config=multires --tfds_manual_dir=CHESTXRAY14
    python -m needles_tf.train --config=multires --config.model.pooling_kwargs.r0=10

§4.2: 512x512 inputs scaled to [0, 1], random zoom, translation and rotation,
Adam at 1e-3 with weight decay 1e-5,
multi-label binary cross-entropy, the checkpoint with the best mean validation
AUC over the 14 findings kept. The saliency map is 64x64 (stride 8) with
LSE-LBA at r0 = 5 (0, 5 and 10 in Table 3). On nMNIST (K = 1) for a comparison
with BagNet: --dataset=nmnist/canvas_128 --config.model.num_classes=1.
"""

import ml_collections

from needles_tf.configs import finished, nmnist

# ChestX-ray14, and nMNIST for a comparison with BagNet
DATASETS = ("cxr14", "nmnist")

PRESETS = {
    # A laptop CPU: fewer epochs, narrower; the architecture and recipe unchanged.
    "cpu_quick": {"model.width": 0.25, "model.growth_rate": 8, "epochs": 10, "batch_size": 8},
    # nMNIST canvas_128 (O2I 4.8%, one class) on 2 cores: cpu_quick's model on the whole
    # training split, no warps (the needle must stay a 3), batches of 16. The recipe of the
    # packaged nmnist_canvas128_multires_lse_lba (needles_tf/packaged.py).
    "cpu_canvas128": {
        "dataset": "nmnist/canvas_128",
        "model.num_classes": 1,
        "model.width": 0.25,
        "model.growth_rate": 8,
        "augmentation.zoom": 0.0,
        "augmentation.translate_pixels": 0.0,
        "augmentation.rotate_degrees": 0.0,
        "best_metric": "accuracy",
        "lr_decay_epochs": (6,),
        "epochs": 8,
        "batch_size": 16,
        "effective_batch_size": 16,
    },
}


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    config = nmnist.get_config()
    config.unlock()  # the model's fields are this extractor's own
    config.dataset = "cxr14/size512"
    config.model = ml_collections.ConfigDict(
        {
            "extractor": "multires",
            "input_channels": 1,
            "levels": 4,  # fused resolutions: strides 8, 16, 32, 64 of a 512 input
            "saliency_stride": 8,  # 512 / 8 = a 64x64 saliency map (§4.2)
            "width": 1.0,  # channels: 32 at stride 2, doubling per halving
            "growth_rate": 16,
            "dense_layers": 2,
            "normalization": "batch",
            "head": "instance",
            "pooling": "lse_lba",
            "pooling_kwargs": {"r0": 5.0},
            "pixel_head": "",
            "num_classes": 14,
            "dtype_policy": "auto",
        }
    )
    config.optimizer = "adam"
    config.learning_rate = 1e-3
    config.weight_decay = 1e-5
    config.lr_decay_epochs = ()
    config.epochs = 100
    config.batch_size = 16
    config.effective_batch_size = 16
    config.best_metric = "auc"  # early stopping on the mean validation AUC (§4.2)
    # §4.2: "zoomed by a factor uniformly sampled from [0.25, 0.75]" (read here as a zoom
    # of 1 ± 0.25), translated by up to ±50 pixels, rotated by up to ±25 degrees.
    config.augmentation = {"zoom": 0.25, "translate_pixels": 50.0, "rotate_degrees": 25.0}
    return finished(config, preset, PRESETS)
