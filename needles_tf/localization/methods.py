"""Saliency methods by name (`--saliency`): maps at input resolution, raw scale.

Each method is called as `method(model, images, geometry=(rf, stride), k=0)`
with the classifier (a needles_tf.models.classifier.NeedleClassifier), a
batch of images in [0, 255] (B, H, W, C), the geometry of its saliency grid
(its backbone's `geometry`) and the class index k, and
returns (B, H, W) float32 maps. The [0, 1] view (needles_tf.metrics.unit_interval) is for display.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import ops

from needles_tf.localization.gradients import input_gradient
from needles_tf.localization.upsample import saliency_to_input
from needles_tf.models.heads import EmbeddingPoolingHead, InstancePoolingHead

SALIENCY_METHODS: dict[str, Callable] = {}


def register_saliency(name: str):
    def register(fn):
        SALIENCY_METHODS[name] = fn
        return fn

    return register


def get_saliency_method(name: str) -> Callable:
    if name not in SALIENCY_METHODS:
        raise ValueError(f"--saliency={name!r}: expected one of {sorted(SALIENCY_METHODS)}.")
    return SALIENCY_METHODS[name]


def _model_map(model: keras.Model, images, k: int, geometry, output: str, what: str):
    outputs = model(images, training=False)
    if output not in outputs:
        raise ValueError(f"--saliency={what!r}: this model has no {output!r} output.")
    grid = ops.cast(outputs[output][..., min(k, outputs[output].shape[-1] - 1)], "float32")
    shape = ops.shape(images)
    return saliency_to_input(grid[..., None], shape[1], shape[2], *geometry)[..., 0]


@register_saliency("instance")
def instance_map(model: keras.Model, images, *, geometry, k: int = 0):
    """The instance head's probability map S (Yao et al. 2018 §3.6)."""
    if not isinstance(model.head, InstancePoolingHead):
        raise ValueError("--saliency='instance' needs a model with head='instance'.")
    return _model_map(model, images, k, geometry, "saliency", "instance")


@register_saliency("cam")
def class_activation_map(model: keras.Model, images, *, geometry, k: int = 0):
    """The embedding head's class activation map: its classifier at every position.

    With attention pooling too: the attention weights are the `attention` method.
    """
    if not isinstance(model.head, EmbeddingPoolingHead):
        raise ValueError("--saliency='cam' needs a model with head='embedding'.")
    return _model_map(model, images, k, geometry, "saliency", "cam")


@register_saliency("attention")
def attention_map(model: keras.Model, images, *, geometry, k: int = 0):
    """The weights of attention pooling (Ilse et al.), one per position, shared by the classes."""
    return _model_map(model, images, k, geometry, "attention", "attention")


@register_saliency("gradient")
def gradient_map(model: keras.Model, images, *, geometry=None, k: int = 0):
    """|d logit_k / d input|, summed over channels (Pawlowski et al. 2019 App. C.4)."""
    images = ops.cast(images, "float32")
    gradient = input_gradient(lambda x: model(x, training=False)["logits"][:, k], images)
    return ops.sum(ops.abs(gradient), axis=-1)


def soft_threshold(x, threshold: float):
    """s_λ(x) = sign(x) · max(|x| - λ, 0)."""
    return ops.sign(x) * ops.maximum(ops.abs(x) - threshold, 0.0)


@register_saliency("sparse_inversion")
def sparse_inversion_map(
    model: keras.Model,
    images,
    *,
    geometry=None,
    k: int = 0,
    steps: int = 20,
    step_size: float = 0.1,
    sparsity: float = 0.01,
):
    """Sparse network inversion (Shin et al. 2020): the minimal input that keeps the prediction.

    From X⁰ = the image (scaled to [0, 1]), X^{t+1} = s_λ(X^t - η ∇l(X^t)) with
    l the cross-entropy between the bag score P(X) and the predicted label Ŷ;
    what survives the soft-thresholding is the key evidence. Returns |X^T|
    summed over channels.
    """
    x = ops.cast(images, "float32") / 255.0
    predicted = ops.cast(model(images, training=False)["probability"][:, k] >= 0.5, "float32")

    def loss(value):
        logits = model(value * 255.0, training=False)["logits"][:, k]
        return ops.binary_crossentropy(predicted, logits, from_logits=True)

    for _ in range(steps):
        x = soft_threshold(x - step_size * input_gradient(loss, x), sparsity)
    return ops.sum(ops.abs(x), axis=-1)
