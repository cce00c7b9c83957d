"""Sparse-shot localization (Panteli et al., ICCV 2021): find every 3 when a few are annotated.

    python -m needles_tf.train --config=sparse_shot:cpu_512 \
        --config.loss=exclusive_cross_entropy --config.annotation_fraction=0.1

nmnist/many_needles_512 canvases hold 10-40 3s; a fraction of them is annotated
(the same nested subsets in every run: the dataset's annotation order). The
instance head's per-cell logits are trained against the annotated 3s' cells
(needles_tf/training/modes/cell_targets.py) with `loss`; validation and test count every 3.
`python -m needles_tf.evaluate --model_dir=RUN` detects the 3s as local maxima of
the map: precision, recall, F1 and average precision.
"""

import ml_collections

from needles_tf.configs import apply_preset, nmnist

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
        "exclusive_cross_entropy.exclusivity_midpoint": 1.0,
        "exclusive_cross_entropy.background_midpoint": 3.0,
        "exclusive_cross_entropy.annealing_temperature": 0.5,
    },
}


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    config = nmnist.get_config()
    config.dataset = "nmnist/many_needles_512"
    config.model.head = "instance"  # its per-cell logits are what dense training trains
    # cross_entropy | focal | exclusive_cross_entropy (needles_tf.training.losses.DENSE_LOSSES)
    config.loss = "exclusive_cross_entropy"
    config.annotation_fraction = 1.0  # of each training canvas's 3s, the rest unannotated
    # a cell is a target if its window centre is this close (pixels, each axis) to an
    # annotated 3's centre: one stride, about two cells per axis
    config.target_radius = 8.0
    # every cell starts at this probability (the classifier's bias; Lin et al. 2017 §4.1);
    # 0 keeps the default initialization
    config.prior_probability = 0.01
    config.crop_size = 161  # training crops (pixels): 17x17 cells of the BagNet-33
    config.focal = ml_collections.ConfigDict({"alpha": 0.25, "gamma": 2.0})  # Lin et al. 2017
    config.exclusive_cross_entropy = ml_collections.ConfigDict(
        {  # the authors' defaults (needles_tf.training.losses.exclusive_cross_entropy_terms)
            "exclusivity_threshold": 0.5,
            "background_sampling": 0.5,
            "exclusivity_midpoint": 50.0,
            "background_midpoint": 150.0,
            "annealing_temperature": 10.0,
            "focal_alpha": 0.2,
            "focal_gamma": 0.1,
        }
    )
    config.best_metric = "auc"  # of the cells against every 3 of the validation canvases
    config.precise_bn_images = 32  # whole canvases: 8.4 M pixels of batch statistics
    config.overlay_images = 0
    if preset:
        apply_preset(config, preset, PRESETS)
    return config
