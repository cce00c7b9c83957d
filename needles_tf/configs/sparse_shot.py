"""Sparse-shot localization (Panteli et al., ICCV 2021): find every 3 when a few are annotated.

    python -m needles_tf.train --config=sparse_shot:cpu_512 \
        --config.cell_targets.loss=exclusive_cross_entropy \
        --config.cell_targets.annotation_fraction=0.1

nmnist/many_needles_512 canvases hold 10-40 3s; a fraction of them is annotated
(the same nested subsets in every run: the dataset's annotation order). The
instance head's per-cell logits are trained against the annotated 3s' cells
(needles_tf/training/modes/cell_targets.py) with `loss`; validation and test count every 3.
`python -m needles_tf.evaluate --model_dir=RUN` detects the 3s as local maxima of
the map: precision, recall, F1 and average precision.
"""

import ml_collections

from needles_tf.configs import finished, nmnist

DATASETS = ("nmnist/many_needles_512", "nmnist/many_needles_1024")

PRESETS = {
    # 2 cores, about 6 minutes: the s = 1/4 batch-norm BagNet-33 from scratch on 161²
    # crops of the 512² canvases (28 steps per epoch), 8 epochs. The exclusive
    # cross-entropy's annealing, at epochs 50 and 150 (temperature 10) in the authors'
    # release, is moved into this schedule: epochs 1 and 3, temperature 0.5.
    "cpu_512": {
        **nmnist.CPU_CANVAS_MODEL,
        "optimizer": "adam",
        "learning_rate": 2e-3,
        "lr_decay_epochs": (6, 7),
        "epochs": 8,
        "batch_size": 16,
        "effective_batch_size": 16,
        "export": False,
        "cell_targets.exclusive_cross_entropy.exclusivity_midpoint": 1.0,
        "cell_targets.exclusive_cross_entropy.background_midpoint": 3.0,
        "cell_targets.exclusive_cross_entropy.annealing_temperature": 0.5,
    },
}


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    config = nmnist.get_config()
    config.mode = "cell_targets"
    config.dataset = "nmnist/many_needles_512"
    config.model.head = "instance"  # its per-cell logits are what cell targets train
    config.best_metric = "auc"  # of the cells against every 3 of the validation canvases
    config.precise_bn_images = 32  # whole canvases: 8.4 M pixels of batch statistics
    config.overlay_images = 0
    return finished(config, preset, PRESETS)
