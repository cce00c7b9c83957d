"""Dense localization: every grid cell's logit trained against a map of annotated needles.

The instance head already gives a logit per grid cell (one window of the input);
sparse-shot training supervises those logits directly: 1 at the cells of an
annotated needle, 0 everywhere else (needles_tf/data/dense.py), with the loss the
run names (needles_tf.training.losses.DENSE_LOSSES). The head's cells were chosen over a
decoder to a finer resolution: a needle (28 px) spans three to four cells of the
stride-8 grid, so the grid already resolves one needle from the next, and the
trained model stays an ordinary needles_tf model (export, streaming, slides, the
instance map as its saliency) whose image logit pools the same cells.
"""

from __future__ import annotations

import math

import keras
from keras import ops


class DenseTraining(keras.Model):
    """Images -> per-cell logits (B, h, w, K) of `inference`'s instance head."""

    def __init__(self, inference: keras.Model, prior_probability: float = 0.0, **kwargs):
        """`prior_probability` > 0 sets the classifier's bias to its logit (Lin et al.,
        "Focal Loss for Dense Object Detection", ICCV 2017, §4.1), so that the rare
        positives do not begin with half the loss of the whole background. The kernel
        keeps its initializer (Lin et al. draw it with standard deviation 0.01), so cells
        whose features are large can start far from the prior."""
        super().__init__(**kwargs)
        head = inference.head
        if not hasattr(head, "instance_classifier"):
            raise ValueError(
                f"--head={type(head).__name__}: dense localization trains the instance "
                "head's per-cell logits; use --head=instance."
            )
        self.inference = inference
        if prior_probability > 0:
            bias = head.instance_classifier.bias
            logit = math.log(prior_probability / (1.0 - prior_probability))
            bias.assign(ops.full(bias.shape, logit, bias.dtype))
        # The epoch the loss anneals with (exclusive cross-entropy), set by LossEpoch.
        self.loss_epoch = keras.Variable(0.0, trainable=False, name="loss_epoch")

    def call(self, images, training=False):
        grid = self.inference.embed(images, training=training)
        return self.inference.head.instance_classifier(ops.cast(grid, "float32"))


class LossEpoch(keras.callbacks.Callback):
    """Tells the loss which epoch training is in (its thresholds anneal with it)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.loss_epoch.assign(float(epoch))
