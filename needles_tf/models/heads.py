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

A head also classifies a grid too large to hold, piece by piece (needles_tf/
localization/streaming.py): `tile_state(piece)` -> (pooling state, the piece's maps),
`merge_states`, `finish(state)` -> logits and probability, and `tile_outputs(maps,
state)` -> the piece's slice of `call`'s maps, given the final state.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import ops

from needles_tf.layers.pooling import pooling_class
from needles_tf.registry import Registry

HEADS: Registry[type[MILHead]] = Registry("--head")


def register_head(name: str) -> Callable[[type[MILHead]], type[MILHead]]:
    """Class decorator: `--head=name` builds this head (and it serializes)."""

    def register(cls: type[MILHead]) -> type[MILHead]:
        HEADS.register(name)(keras.saving.register_keras_serializable(package="needles_tf")(cls))
        return cls

    return register


def get_head_class(name: str) -> type[MILHead]:
    return HEADS.get_or_raise(name)


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

    def _pieces_of(self, pooled_input) -> tuple[dict, dict]:
        """The pooling's state of one piece of what it pools, and the attention scores."""
        state = self.pooling.tile_state(pooled_input)
        maps = {"attention_scores": self.pooling.scores(pooled_input)} if self.has_attention else {}
        return state, maps

    def tile_state(self, embedding) -> tuple[dict, dict]:
        """One piece (B, h, w, D) of the embedding grid -> (pooling state, its maps)."""
        raise NotImplementedError

    def merge_states(self, a: dict, b: dict) -> dict:
        return self.pooling.merge_states(a, b)

    def finish(self, state: dict) -> dict:
        """{logits, probability} (B, K) of the grid whose pieces were merged into `state`."""
        raise NotImplementedError

    def tile_outputs(self, maps: dict, state: dict) -> dict:
        """A piece's outputs, as `call` gives them for the whole grid, sliced to the piece."""
        outputs = {**self.finish(state), "saliency": maps["saliency"]}
        if self.has_attention:
            outputs["attention"] = self.pooling.weights_from_state(maps["attention_scores"], state)
            outputs["attention_peak"] = self.pooling.peak_weight(state)  # the whole grid's
        return outputs

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

    def tile_state(self, embedding):
        embedding = ops.cast(embedding, "float32")
        state, maps = self._pieces_of(embedding)
        return state, {**maps, "saliency": self.classifier(embedding)}

    def finish(self, state):
        logits = self.classifier(self.pooling.pool_state(state))
        return {"logits": logits, "probability": ops.sigmoid(logits)}


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

    def tile_state(self, embedding):
        instance_logits = self.instance_classifier(ops.cast(embedding, "float32"))
        saliency = ops.sigmoid(instance_logits)
        if self.pooling.pools_logits:
            state, maps = self.pooling.logit_state(instance_logits), {}
        else:
            state, maps = self._pieces_of(saliency)
        return state, {**maps, "saliency": saliency}

    def finish(self, state):
        if self.pooling.pools_logits:
            logits = self.pooling.image_logit_from_state(state)
            return {"logits": logits, "probability": ops.sigmoid(logits)}
        probability = self.pooling.pool_state(state)
        return {"logits": self.to_logit(probability), "probability": probability}
