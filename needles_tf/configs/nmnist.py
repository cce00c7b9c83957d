"""nMNIST experiments (Pawlowski et al. 2019 §3): BagNet extractor, global pooling, binary task.

    python -m needles_tf.train --config=nmnist --config.model.pooling=lse_lba
    python -m needles_tf.train --preset=cpu_quick        # or --config=nmnist:cpu_quick

Defaults are the paper's protocol (§3): RMSProp, learning rate 5e-5 divided by
10 at epochs 80, 120 and 160, 200 epochs, effective batch 32, binary
cross-entropy, the checkpoint with the best validation accuracy kept.
"""

import ml_collections

from needles_tf.configs import finished
from needles_tf.training.modes import mode_sections

# The TFDS datasets this family trains on.
DATASETS = ("nmnist",)

# The s = 1/4 batch-norm BagNet that the canvas recipes train, stage after stage.
CPU_CANVAS_MODEL = {
    "model.width": 0.25,
    "model.normalization": "batch",
    "model.zero_init_residual": True,
}

# Short schedules; each maps dotted config fields to values.
PRESETS = {
    # A laptop CPU, about 25 minutes on 2 cores for canvas_64. The paper's protocol sits
    # at chance for many epochs (its §3 "Optimization"); batch normalization, Adam at
    # 3e-3 and batches of 16 leave chance within the first epoch (measured on 2 cores).
    "cpu_quick": {
        "model.width": 0.25,
        "model.normalization": "batch",
        "optimizer": "adam",
        "learning_rate": 3e-3,
        "lr_decay_epochs": (7, 9),
        "epochs": 10,
        "batch_size": 16,
        "effective_batch_size": 16,
    },
    # canvas_64 (O2I 19%) in about 10 minutes on 2 cores: cpu_quick with batches of 32
    # (11% more images/s), residual branches starting at zero ("zero gamma", Goyal et al. 2017) and
    # 7 epochs. Adam between 3e-3 and 1e-2 learns alike; 1e-3, a cosine and SGD learn slower
    # (2-epoch probes).
    "cpu_canvas64": {
        **CPU_CANVAS_MODEL,
        "optimizer": "adam",
        "learning_rate": 4e-3,
        "lr_decay_epochs": (5, 6),
        "epochs": 7,
        "batch_size": 32,
        "effective_batch_size": 32,
    },
    # canvas_256 (O2I 1.2%) from a canvas_64 run of the same model, with sparse steps:
    #   python -m needles_tf.train --preset=cpu_canvas64 --head=instance --model_dir=RUN64
    #   python -m needles_tf.train --preset=cpu_canvas256 --init_from=RUN64
    "cpu_canvas256": {
        "dataset": "nmnist/canvas_256",
        **CPU_CANVAS_MODEL,
        "model.head": "instance",
        "mode": "sparse_backprop",
        "optimizer": "adam",
        "learning_rate": 2e-3,
        "lr_decay_epochs": (3,),
        "epochs": 4,
        "batch_size": 16,
        "effective_batch_size": 16,
    },
}


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.dataset = "nmnist/canvas_64"  # TFDS name/config
    config.train_size = 0  # distinct training images; 0 = the whole split (Fig. 5-6)
    config.positive_fraction = 0.5  # App. C.1
    config.oversample_minority = False
    config.model = ml_collections.ConfigDict(
        {
            "extractor": "bagnet",
            "receptive_field": 33,  # best on nMNIST (Pawlowski et al. 2019, §3, Fig. 4)
            "width": 1.0,  # capacity s
            "input_channels": 1,
            "normalization": "instance",  # Pawlowski et al. 2019 §2.2; or "batch" (BagNet's own)
            "zero_init_residual": False,  # gamma = 0 in each block's last normalization
            "head": "embedding",
            "pooling": "max",
            "pooling_kwargs": {},
            "pixel_head": "",  # a pixel head of needles_tf.models.pixelcam (--mode=pixelcam)
            "num_classes": 1,
            # auto: mixed_bfloat16 (float32 statistics and logits) where the CPU or GPU has
            # bf16 matrix units, float32 elsewhere (needles_tf/precision.py)
            "dtype_policy": "auto",
        }
    )
    config.optimizer = "rmsprop"  # rmsprop | adam | sgd
    config.learning_rate = 5e-5
    config.lr_decay_epochs = (80, 120, 160)
    config.lr_decay_factor = 0.1
    config.lr_schedule = (
        "step"  # step (lr_decay_epochs) | cosine (needles_tf/training/schedules.py)
    )
    config.warmup_epochs = 0.0  # cosine only: linear warm-up from 0
    config.weight_decay = 0.0
    config.epochs = 200
    # the validation metric whose best epoch is kept: accuracy (§3), auc, or pixel_loss
    # (lowest; with a PixelCAM head, when accuracy saturates)
    config.best_metric = "accuracy"
    config.batch_size = 32  # global batch of one step, split across replicas
    config.effective_batch_size = 32  # gradients are accumulated up to this many images
    config.seed = 0
    config.init_from = ""  # a run directory whose best weights start this run (any canvas)
    # Stages "DATASET:EPOCHS", each a run in model_dir/stageN-DATASET started from the
    # last one's best weights, e.g. ("nmnist/canvas_64:4", "nmnist/canvas_256:6")
    config.curriculum = ()
    config.strategy = "auto"  # needles_tf.training.distribute.STRATEGIES
    config.checkpoint_every_steps = 0  # 0: at the end of each epoch only
    # how the run trains (needles_tf.training.modes): image, sparse_backprop (only the cells
    # the pooled value depends on, recomputed from their windows; batch norm only),
    # cell_targets, pixelcam; each mode's settings are the section of its name below
    config.mode = "image"
    config.precise_bn_images = 256
    config.overlay_images = 8  # validation images drawn with their saliency in TensorBoard
    # write the SavedModel and model.keras when training ends; False for many runs whose
    # weights are enough (`python -m needles_tf.export --model_dir=RUN` exports later)
    config.export = True
    # warps of the training images (needles_tf.data.augment); all zero: none
    config.augmentation = {"zoom": 0.0, "translate_pixels": 0.0, "rotate_degrees": 0.0}
    config.update(mode_sections())  # every mode's settings, each written once in its module
    return finished(config, preset, PRESETS)
