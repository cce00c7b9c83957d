"""MIL heads: Keras layers from a backbone's embedding grid (B, h, w, D) to named outputs.

Convention everywhere: one sigmoid per class. Binary tasks use K = 1; K > 1 is
multi-label (one-vs-rest). Every head returns a dict with exactly these keys:

  logits       (B, K)        the image-level logits
  probability  (B, K)        sigmoid(logits)
  saliency     (B, h, w, K)  the head's own map: the class activation map of the
                             embedding head, the instance probabilities of the
                             instance head
  attention    (B, h, w, 1)  only with a pooling that weights positions (attention,
                             gated attention): those weights

No tensor is listed under two names. `HEADS` maps `--head` to the class.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import ops

from needles_tf.layers.pooling import pooling_class

HEADS: dict[str, type[MILHead]] = {}


def register_head(name: str) -> Callable[[type[MILHead]], type[MILHead]]:
    """Class decorator: `--head=name` builds this head (and it serializes)."""

    def register(cls: type[MILHead]) -> type[MILHead]:
        HEADS[name] = keras.saving.register_keras_serializable(package="needles_tf")(cls)
        return cls

    return register


def get_head_class(name: str) -> type[MILHead]:
    if name not in HEADS:
        raise ValueError(f"head={name!r}: expected one of {sorted(HEADS)}.")
    return HEADS[name]


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


class MILHead(keras.layers.Layer):
    """Embedding grid -> {logits, probability, saliency[, attention]}, in float32."""

    def __init__(
        self, num_classes: int, pooling: str, pooling_kwargs: dict | None = None, **kwargs
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}: expected at least 1.")
        self.num_classes = int(num_classes)
        self.pooling_name = pooling
        self.pooling_kwargs = dict(pooling_kwargs or {})
        layer_cls = pooling_class(pooling)
        self.pooling = layer_cls(
            return_weights=layer_cls.has_weights, name=f"{pooling}_pooling", **self.pooling_kwargs
        )

    @property
    def has_attention(self) -> bool:
        return self.pooling.return_weights

    @property
    def default_saliency(self) -> str:
        """The saliency method (needles_tf.localization.methods) this head's model serves."""
        raise NotImplementedError

    def _pool(self, x):
        """(pooled, attention or None)."""
        if self.pooling.return_weights:
            return self.pooling(x)
        return self.pooling(x), None

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "pooling": self.pooling_name,
            "pooling_kwargs": self.pooling_kwargs,
        }


@register_head("embedding")
class EmbeddingPoolingHead(MILHead):
    """Pool the embedding per channel, then a linear classifier (Pawlowski et al. 2019, Fig. 3).

    Saliency: the class activation map, the classifier applied at every position.
    """

    def __init__(self, num_classes: int, pooling: str, pooling_kwargs=None, **kwargs):
        if pooling_class(pooling).needs_probabilities:
            raise ValueError(
                f"pooling={pooling!r} needs values in [0, 1]; use it with head='instance', "
                "whose instance probabilities it pools."
            )
        super().__init__(num_classes, pooling, pooling_kwargs, **kwargs)
        self.classifier = keras.layers.Dense(num_classes, dtype="float32", name="classifier")

    @property
    def default_saliency(self) -> str:
        """The attention weights where pooling has them (Ilse et al. 2018), else the CAM."""
        return "attention" if self.has_attention else "cam"

    def build(self, input_shape):
        self.pooling.build(input_shape)
        self.classifier.build((input_shape[0], input_shape[-1]))

    def call(self, embedding):
        embedding = ops.cast(embedding, "float32")
        pooled, attention = self._pool(embedding)
        logits = self.classifier(pooled)
        outputs = {
            "logits": logits,
            "probability": ops.sigmoid(logits),
            "saliency": self.classifier(embedding),
        }
        if attention is not None:
            outputs["attention"] = attention
        return outputs


@register_head("instance")
class InstancePoolingHead(MILHead):
    """A shared classifier at every position -> sigmoid instance probabilities S -> pooling.

    Yao et al. 2018, §3.6: S (B, h, w, K) is the saliency map and the pooled S the
    image probability (LSE-LBA keeps probabilities in [0, 1]).
    """

    def __init__(self, num_classes: int, pooling: str, pooling_kwargs=None, **kwargs):
        if not pooling_class(pooling).preserves_probability:
            raise ValueError(
                f"pooling={pooling!r} does not map probabilities to a probability; with "
                "head='instance' use e.g. 'lse_lba' or 'lse_r' (the mean-normalized log-sum-exp)."
            )
        super().__init__(num_classes, pooling, pooling_kwargs, **kwargs)
        self.instance_classifier = keras.layers.Dense(
            num_classes, dtype="float32", name="instance_classifier"
        )
        self.to_logit = ProbabilityToLogit(name="image_logit")

    @property
    def default_saliency(self) -> str:
        return "instance"

    def build(self, input_shape):
        self.instance_classifier.build(input_shape)
        self.pooling.build((*input_shape[:-1], self.num_classes))
        self.to_logit.build((input_shape[0], self.num_classes))

    def call(self, embedding):
        instance_logits = self.instance_classifier(ops.cast(embedding, "float32"))
        saliency = ops.sigmoid(instance_logits)
        if self.pooling.pools_logits:  # in log space: trainable on any grid
            logits, attention = self.pooling.image_logit(instance_logits), None
            probability = ops.sigmoid(logits)
        else:
            probability, attention = self._pool(saliency)
            logits = self.to_logit(probability)
        outputs = {"logits": logits, "probability": probability, "saliency": saliency}
        if attention is not None:
            outputs["attention"] = attention
        return outputs
