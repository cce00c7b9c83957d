"""Global pooling over spatial positions: (B, H, W, C) -> (B, C).

Pawlowski et al. 2019 App. B.1 (max, mean, log-sum-exp eq. 1, attention eq. 3-4) and paper
004 §3.4-3.5 (generalized mean, Noisy-OR, LSE with sharpness r, LSE-LBA eq. 4).
Every operator is one registered, serializable layer, chosen by name with
`get_pooling`. All compute in float32 whatever the model's precision policy.
Layers that weight positions take `return_weights=True` and then also return
their weights, (B, H, W, 1), for localization.

Every operator also pools in pieces, for maps too large to hold (a slide's grid,
tile by tile): `tile_state(x)` reduces one piece to a small state, `merge_states`
combines two states (in any order and grouping), and `pool_state` turns the state of
all pieces into the pooled value, equal to `pool` of the whole map. The states are
running maxima, sums and counts, log-sum-exps with a running shift, and the online
softmax's numerator and denominator (Milakov & Gimelshein 2018, "Online normalizer
calculation for softmax"). needles_tf/localization/streaming.py drives them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
from keras import ops

from needles_tf.registry import Registry

POOLINGS: Registry[type[GlobalPooling]] = Registry("--pooling")


def register_pooling(name: str) -> Callable[[type], type]:
    """Class decorator: makes a pooling layer selectable as `name` and serializable."""

    def register(cls: type) -> type:
        cls.pooling_name = name
        POOLINGS.register(name)(cls)
        return keras.saving.register_keras_serializable(package="needles_tf")(cls)

    return register


def pooling_class(pooling: str) -> type[GlobalPooling]:
    """The layer class registered as `pooling`."""
    return POOLINGS.get_or_raise(pooling)


def get_pooling(pooling: str, **kwargs) -> GlobalPooling:
    """Builds the pooling layer registered as `pooling`; kwargs go to its constructor."""
    return pooling_class(pooling)(**kwargs)


class GlobalPooling(keras.layers.Layer):
    """Base class: pools the H and W axes of a channels-last map."""

    pooling_name = ""
    has_weights = False
    # Maps values in [0, 1] into [0, 1], so it can pool instance probabilities.
    preserves_probability = True
    # Only defined for inputs in [0, 1], so it cannot pool embeddings.
    needs_probabilities = False
    # Has `image_logit`: the instance head's image logit straight from instance logits,
    # for poolings whose probability rounds to 1 in float32 on large grids.
    pools_logits = False

    def __init__(self, *, return_weights: bool = False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if return_weights and not self.has_weights:
            raise ValueError(f"{self.pooling_name!r} pooling has no position weights to return.")
        self.return_weights = return_weights

    def call(self, inputs):
        return self.pool(ops.cast(inputs, self.compute_dtype))

    def pool(self, x):
        raise NotImplementedError

    def image_logit(self, logits):
        """(B, H, W, C) instance logits -> (B, C) logit of the pooled probability."""
        raise NotImplementedError(f"{self.pooling_name!r} pools probabilities only.")

    def tile_state(self, x) -> dict:
        """One piece (B, h, w, C) of the map -> its state, a dict of (B, ·) tensors."""
        raise NotImplementedError

    def merge_states(self, a: dict, b: dict) -> dict:
        """The state of two pieces together."""
        raise NotImplementedError

    def pool_state(self, state: dict):
        """(B, C): the pooled value of every piece merged into `state`."""
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        pooled = (input_shape[0], input_shape[-1])
        if self.return_weights:
            return pooled, (*input_shape[:3], 1)
        return pooled

    def get_config(self):
        return {**super().get_config(), "return_weights": self.return_weights}


def _num_positions(x):
    shape = ops.shape(x)
    return ops.cast(shape[1] * shape[2], x.dtype)


def _positions(x):
    """(B, 1) float32: the positions of a (B, h, w, C) piece, for running counts."""
    shape = ops.shape(x)
    return ops.full((shape[0], 1), ops.cast(shape[1] * shape[2], "float32"))


def _exp_sum_state(scaled):
    """Σ exp(scaled) over positions as a shift (the max) and the sum of exp(scaled - shift)."""
    shift = ops.max(scaled, axis=(1, 2))
    total = ops.sum(ops.exp(scaled - shift[:, None, None, :]), axis=(1, 2))
    return shift, total


def _merge_exp_sums(shift_a, total_a, shift_b, total_b):
    shift = ops.maximum(shift_a, shift_b)
    return shift, total_a * ops.exp(shift_a - shift) + total_b * ops.exp(shift_b - shift)


def _mean_logsumexp_state(x, r) -> dict:
    shift, total = _exp_sum_state(r * x)
    return {"shift": shift, "total": total, "count": _positions(x)}


def _merge_mean_logsumexp(a: dict, b: dict) -> dict:
    shift, total = _merge_exp_sums(a["shift"], a["total"], b["shift"], b["total"])
    return {"shift": shift, "total": total, "count": a["count"] + b["count"]}


def _pool_mean_logsumexp(state: dict, r):
    """`_mean_logsumexp` from its state; the shift over r is the maximum."""
    pooled = (state["shift"] + ops.log(state["total"]) - ops.log(state["count"])) / r
    return ops.minimum(pooled, state["shift"] / r)


def _mean_logsumexp(x, r):
    """(1/r) log( (1/N) Σ exp(r x) ): between the mean (r -> 0) and the max (r -> inf).

    Clipped at the max, which float32 rounding can otherwise pass (a probability of 1 + 1e-7).
    """
    pooled = (ops.logsumexp(r * x, axis=(1, 2)) - ops.log(_num_positions(x))) / r
    return ops.minimum(pooled, ops.max(x, axis=(1, 2)))


@register_pooling("max")
class MaxPooling(GlobalPooling):
    """max over positions (Pawlowski et al. 2019 App. B.1)."""

    def pool(self, x):
        return ops.max(x, axis=(1, 2))

    def tile_state(self, x):
        return {"max": self.pool(ops.cast(x, "float32"))}

    def merge_states(self, a, b):
        return {"max": ops.maximum(a["max"], b["max"])}

    def pool_state(self, state):
        return state["max"]


@register_pooling("mean")
class MeanPooling(GlobalPooling):
    """Average over positions (Pawlowski et al. 2019 eq. 2)."""

    def pool(self, x):
        return ops.mean(x, axis=(1, 2))

    def tile_state(self, x):
        return {"sum": ops.sum(ops.cast(x, "float32"), axis=(1, 2)), "count": _positions(x)}

    def merge_states(self, a, b):
        return {"sum": a["sum"] + b["sum"], "count": a["count"] + b["count"]}

    def pool_state(self, state):
        return state["sum"] / state["count"]


@register_pooling("lse")
class LogSumExpPooling(GlobalPooling):
    """log Σ exp over positions (Pawlowski et al. 2019 eq. 1)."""

    preserves_probability = False

    def pool(self, x):
        return ops.logsumexp(x, axis=(1, 2))

    def tile_state(self, x):
        shift, total = _exp_sum_state(ops.cast(x, "float32"))
        return {"shift": shift, "total": total}

    def merge_states(self, a, b):
        shift, total = _merge_exp_sums(a["shift"], a["total"], b["shift"], b["total"])
        return {"shift": shift, "total": total}

    def pool_state(self, state):
        return state["shift"] + ops.log(state["total"])


class MeanLogSumExpPooling(GlobalPooling):
    """(1/r) log mean exp(r x), with r = `self.sharpness` (subclasses define it)."""

    @property
    def sharpness(self):
        raise NotImplementedError

    def pool(self, x):
        return _mean_logsumexp(x, self.sharpness)

    def tile_state(self, x):
        return _mean_logsumexp_state(ops.cast(x, "float32"), self.sharpness)

    def merge_states(self, a, b):
        return _merge_mean_logsumexp(a, b)

    def pool_state(self, state):
        return _pool_mean_logsumexp(state, self.sharpness)


@register_pooling("lse_r")
class SharpLogSumExpPooling(MeanLogSumExpPooling):
    """(1/r) log mean exp(r x) with a fixed sharpness r (Yao et al. 2018 §3.4)."""

    def __init__(self, r: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        if r <= 0:
            raise ValueError(f"r={r}: expected a positive sharpness.")
        self.r = float(r)

    @property
    def sharpness(self):
        return self.r

    def get_config(self):
        return {**super().get_config(), "r": self.r}


@register_pooling("lse_lba")
class LseLbaPooling(MeanLogSumExpPooling):
    """LSE with lower-bounded adaptation, r = r0 + exp(beta), beta learned (Yao et al. 2018 eq. 4).

    Maps a map of probabilities to a probability: all 0 -> 0, all 1 -> 1.
    """

    def __init__(self, r0: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        if r0 < 0:
            raise ValueError(f"r0={r0}: expected a non-negative sharpness prior.")
        self.r0 = float(r0)

    def build(self, input_shape):
        self.beta = self.add_weight(name="beta", shape=(), initializer="zeros")

    @property
    def sharpness(self):
        return self.r0 + ops.exp(self.beta)

    def get_config(self):
        return {**super().get_config(), "r0": self.r0}


@register_pooling("gm")
class GeneralizedMeanPooling(GlobalPooling):
    """(mean x^p)^(1/p) with learned p > 0, for x >= 0 (Yao et al. 2018 §3.4).

    Computed in log space, (1/p) log mean exp(p log x), so that small values
    do not underflow.
    """

    def __init__(self, p: float = 3.0, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        if p <= 0:
            raise ValueError(f"p={p}: expected a positive exponent.")
        self.p, self.epsilon = float(p), float(epsilon)

    def build(self, input_shape):
        # p = softplus(rho) keeps p > 0; initialised so that p starts at self.p.
        rho = math.log(math.expm1(self.p))
        self.rho = self.add_weight(
            name="rho", shape=(), initializer=keras.initializers.Constant(rho)
        )

    @property
    def exponent(self):
        return ops.softplus(self.rho)

    def pool(self, x):
        log_x = ops.log(ops.maximum(x, self.epsilon))
        return ops.exp(_mean_logsumexp(log_x, self.exponent))

    def tile_state(self, x):
        log_x = ops.log(ops.maximum(ops.cast(x, "float32"), self.epsilon))
        return _mean_logsumexp_state(log_x, self.exponent)

    def merge_states(self, a, b):
        return _merge_mean_logsumexp(a, b)

    def pool_state(self, state):
        return ops.exp(_pool_mean_logsumexp(state, self.exponent))

    def get_config(self):
        return {**super().get_config(), "p": self.p, "epsilon": self.epsilon}


@register_pooling("noisy_or")
class NoisyOrPooling(GlobalPooling):
    """1 - Π (1 - x) over probabilities x (Yao et al. 2018 §3.4), as -expm1(Σ log1p(-x)).

    On a large grid that probability is 1 in float32 (4096 cells of 0.005 give
    1 - 1e-9), and its gradient vanishes. The instance head therefore takes the
    image logit from the instance logits z, in log space throughout:
    S = Σ log(1 - sigmoid(z)) = -Σ softplus(z), logit = log(-expm1(S)) - S,
    whose derivative in S tends to -1, not 0, as S falls.
    """

    needs_probabilities = True
    pools_logits = True

    def __init__(self, epsilon: float = 1e-7, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def pool(self, x):
        x = ops.clip(x, 0.0, 1.0 - self.epsilon)
        return -ops.expm1(ops.sum(ops.log1p(-x), axis=(1, 2)))

    def image_logit(self, logits):
        return self.image_logit_from_state(self.logit_state(logits))

    def logit_state(self, logits) -> dict:
        """The state of a piece of instance logits: S = Σ log(1 - sigmoid(z)) = -Σ softplus(z)."""
        return {"log_none": -ops.sum(ops.softplus(ops.cast(logits, "float32")), axis=(1, 2))}

    def image_logit_from_state(self, state):
        # S = 0 (every softplus underflowed) would give log(0): keep S below -1e-30.
        log_none = ops.minimum(state["log_none"], -1e-30)
        return ops.log(-ops.expm1(log_none)) - log_none

    def tile_state(self, x):
        x = ops.clip(ops.cast(x, "float32"), 0.0, 1.0 - self.epsilon)
        return {"log_none": ops.sum(ops.log1p(-x), axis=(1, 2))}

    def merge_states(self, a, b):
        return {"log_none": a["log_none"] + b["log_none"]}

    def pool_state(self, state):
        return -ops.expm1(state["log_none"])

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@register_pooling("attention")
class AttentionPooling(GlobalPooling):
    """Σ a·x, a = softmax over positions of w·tanh(V x).

    Ilse et al. 2018; Pawlowski et al. 2019, eq. 3-4.
    """

    has_weights = True

    def __init__(self, hidden_units: int = 128, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = int(hidden_units)
        self.hidden = keras.layers.Dense(self.hidden_units, activation="tanh", dtype=self.dtype)
        self.score = keras.layers.Dense(1, dtype=self.dtype)

    def build(self, input_shape):
        self.hidden.build(input_shape)
        self.score.build((*input_shape[:-1], self.hidden_units))

    def scores(self, x):
        return self.score(self.hidden(x))

    def pool(self, x):
        scores = self.scores(x)  # (B, H, W, 1)
        shape = ops.shape(scores)
        flat = ops.reshape(scores, (shape[0], -1))
        weights = ops.reshape(ops.softmax(flat, axis=-1), shape)
        pooled = ops.sum(weights * x, axis=(1, 2))
        return (pooled, weights) if self.return_weights else pooled

    def tile_state(self, x):
        """The online softmax: scores shifted by the running maximum, the denominator
        Σ exp(score - shift) and the numerator Σ exp(score - shift)·x."""
        x = ops.cast(x, "float32")
        scores = self.scores(x)
        shift = ops.max(scores, axis=(1, 2))
        weights = ops.exp(scores - shift[:, None, None, :])
        return {
            "shift": shift,
            "denominator": ops.sum(weights, axis=(1, 2)),
            "numerator": ops.sum(weights * x, axis=(1, 2)),
        }

    def merge_states(self, a, b):
        shift = ops.maximum(a["shift"], b["shift"])
        scale_a, scale_b = ops.exp(a["shift"] - shift), ops.exp(b["shift"] - shift)
        return {
            "shift": shift,
            "denominator": a["denominator"] * scale_a + b["denominator"] * scale_b,
            "numerator": a["numerator"] * scale_a + b["numerator"] * scale_b,
        }

    def pool_state(self, state):
        return state["numerator"] / state["denominator"]

    def weights_from_state(self, scores, state):
        """A piece's (B, h, w, 1) attention weights, from its scores and the final state."""
        log_normalizer = state["shift"] + ops.log(state["denominator"])  # (B, 1)
        return ops.exp(scores - log_normalizer[:, None, None, :])

    def peak_weight(self, state):
        """(B, 1): the largest weight of the whole map, exp(max score - log normalizer)."""
        return 1.0 / state["denominator"]

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units}


@register_pooling("gated_attention")
class GatedAttentionPooling(AttentionPooling):
    """Attention with a gate: w·(tanh(V x) ⊙ sigmoid(U x)) (Ilse et al. 2018)."""

    def __init__(self, hidden_units: int = 128, **kwargs):
        super().__init__(hidden_units, **kwargs)
        self.gate = keras.layers.Dense(self.hidden_units, activation="sigmoid", dtype=self.dtype)

    def build(self, input_shape):
        super().build(input_shape)
        self.gate.build(input_shape)

    def scores(self, x):
        return self.score(self.hidden(x) * self.gate(x))
