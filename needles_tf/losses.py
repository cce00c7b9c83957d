"""Losses beyond Keras's own, in keras.ops (backend-neutral)."""

from __future__ import annotations

from keras import ops

IGNORE = -1  # the seed value of an unlabelled pixel


def partial_cross_entropy(seeds, logits):
    """Binary cross-entropy averaged over the labelled pixels of the whole batch only.

    seeds (B, H, W) or (B, H, W, 1): 1 foreground, 0 background, IGNORE unlabelled;
    logits of the same shape. Unlabelled pixels add nothing to the value nor to the
    gradient; a batch with no labelled pixel has loss 0. Guichemerre et al., "PixelCAM"
    (MIDL 2025): the pixel term, CE over the sampled seeds (2-way softmax there,
    one sigmoid logit here: the same function).
    """
    logits = ops.reshape(ops.cast(logits, "float32"), ops.shape(seeds))
    labelled = ops.cast(seeds >= 0, "float32")
    target = ops.cast(seeds == 1, "float32")
    per_pixel = ops.binary_crossentropy(target, logits, from_logits=True)
    total = ops.sum(per_pixel * labelled)
    return total / ops.maximum(ops.sum(labelled), 1.0)
