"""MIL heads: topological embedding (B, h, w, C) -> named outputs.

Convention everywhere: one sigmoid per class. Binary tasks use K = 1; K > 1 is
multi-label (one-vs-rest). Outputs: `logits` (B, K), `probability` (B, K),
`saliency` (B, h, w, K) and, for attention pooling, `attention` (B, h, w, 1).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import ops

from needles_tf.layers.pooling import pooling_class

HEADS: dict[str, Callable] = {}


def register_head(name: str) -> Callable[[Callable], Callable]:
    def register(fn: Callable) -> Callable:
        HEADS[name] = fn
        return fn

    return register


@keras.saving.register_keras_serializable(package="needles_tf")
class ProbabilityToLogit(keras.layers.Layer):
    """log(p / (1 - p)), with p clipped away from 0 and 1 so that the loss stays finite."""

    def __init__(self, epsilon: float = 1e-7, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, p):
        p = ops.clip(ops.cast(p, "float32"), self.epsilon, 1.0 - self.epsilon)
        return ops.log(p) - ops.log1p(-p)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def _pooling(name: str, pooling_kwargs: dict | None):
    """The pooling layer, returning its position weights where it has them."""
    layer_cls = pooling_class(name)
    return layer_cls(
        return_weights=layer_cls.has_weights, name=f"{name}_pooling", **(pooling_kwargs or {})
    )


def _pool(pooling, x):
    """Returns (pooled, attention or None)."""
    if pooling.return_weights:
        return pooling(x)
    return pooling(x), None


@register_head("embedding")
def embedding_pooling_head(embedding, num_classes: int, pooling: str, pooling_kwargs=None):
    """Pool the embedding per channel, then a linear classifier (Pawlowski et al. 2019 Fig. 3).

    Saliency: the class activation map (the classifier applied at every
    position) or, with attention pooling, the attention map.
    """
    if pooling_class(pooling).needs_probabilities:
        raise ValueError(
            f"pooling={pooling!r} needs values in [0, 1]; use it with head='instance', "
            "whose instance probabilities it pools."
        )
    classifier = keras.layers.Dense(num_classes, dtype="float32", name="classifier")
    pooled, attention = _pool(_pooling(pooling, pooling_kwargs), embedding)
    logits = classifier(pooled)
    outputs = {
        "logits": logits,
        "probability": keras.layers.Activation("sigmoid", dtype="float32", name="probability")(
            logits
        ),
    }
    if attention is not None:
        outputs["attention"] = attention
        outputs["saliency"] = attention
    else:
        outputs["saliency"] = classifier(ops.cast(embedding, "float32"))
    return outputs


@register_head("instance")
def instance_pooling_head(embedding, num_classes: int, pooling: str, pooling_kwargs=None):
    """A shared classifier at every position -> sigmoid instance probabilities S -> pooling.

    Yao et al. 2018 §3.6: S (B, h, w, K) is the saliency map and the pooled S the
    image probability (LSE-LBA keeps probabilities in [0, 1]).
    """
    if not pooling_class(pooling).preserves_probability:
        raise ValueError(
            f"pooling={pooling!r} does not map probabilities to a probability; with "
            "head='instance' use e.g. 'lse_lba' or 'lse_r' (the mean-normalized log-sum-exp)."
        )
    instance_logits = keras.layers.Dense(num_classes, dtype="float32", name="instance_classifier")(
        embedding
    )
    saliency = keras.layers.Activation("sigmoid", dtype="float32", name="instance_probability")(
        instance_logits
    )
    probability, attention = _pool(_pooling(pooling, pooling_kwargs), saliency)
    outputs = {
        "logits": ProbabilityToLogit(name="image_logit")(probability),
        "probability": probability,
        "saliency": saliency,
    }
    if attention is not None:
        outputs["attention"] = attention
    return outputs
