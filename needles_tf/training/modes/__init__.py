"""Training modes, chosen by --mode (`config.mode`); each module registers one.

image            image-level labels, every cell backpropagated (the default)
sparse_backprop  image-level labels, the gradient through the pooled cells' windows only
cell_targets     per-cell targets from a fraction of annotated needles (sparse-shot)
pixelcam         image labels plus a pixel head taught by a trained model's seeds
candidates       image-level labels on each image's top cells, refreshed by rolling scans
"""

from needles_tf.training.modes import (  # noqa: F401
    candidates,
    cell_targets,
    image,
    pixelcam,
    sparse_backprop,
)
from needles_tf.training.modes.base import TRAINING_MODES, Check, TrainingMode, mode_sections

__all__ = ["TRAINING_MODES", "Check", "TrainingMode", "mode_sections"]
