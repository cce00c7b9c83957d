"""Global pooling over spatial positions: (B, H, W, C) -> (B, C).

Pawlowski et al. 2019 App. B.1 (max, mean, log-sum-exp eq. 1, attention eq. 3-4) and paper
004 §3.4-3.5 (generalized mean, Noisy-OR, LSE with sharpness r, LSE-LBA eq. 4).
Every operator is one registered, serializable layer, chosen by name with
`get_pooling`. All compute in float32 whatever the model's precision policy.
Layers that weight positions take `return_weights=True` and then also return
their weights, (B, H, W, 1), for localization.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
from keras import ops

POOLINGS: dict[str, type[GlobalPooling]] = {}


def register_pooling(name: str) -> Callable[[type], type]:
    """Class decorator: makes a pooling layer selectable as `name` and serializable."""

    def register(cls: type) -> type:
        cls.pooling_name = name
        POOLINGS[name] = cls
        return keras.saving.register_keras_serializable(package="needles_tf")(cls)

    return register


def pooling_class(pooling: str) -> type[GlobalPooling]:
    """The layer class registered as `pooling`."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}: expected one of {sorted(POOLINGS)}.")
    return POOLINGS[pooling]


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


@register_pooling("mean")
class MeanPooling(GlobalPooling):
    """Average over positions (Pawlowski et al. 2019 eq. 2)."""

    def pool(self, x):
        return ops.mean(x, axis=(1, 2))


@register_pooling("lse")
class LogSumExpPooling(GlobalPooling):
    """log Σ exp over positions (Pawlowski et al. 2019 eq. 1)."""

    preserves_probability = False

    def pool(self, x):
        return ops.logsumexp(x, axis=(1, 2))


@register_pooling("lse_r")
class SharpLogSumExpPooling(GlobalPooling):
    """(1/r) log mean exp(r x) with a fixed sharpness r (Yao et al. 2018 §3.4)."""

    def __init__(self, r: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        if r <= 0:
            raise ValueError(f"r={r}: expected a positive sharpness.")
        self.r = float(r)

    def pool(self, x):
        return _mean_logsumexp(x, self.r)

    def get_config(self):
        return {**super().get_config(), "r": self.r}


@register_pooling("lse_lba")
class LseLbaPooling(GlobalPooling):
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

    def pool(self, x):
        return _mean_logsumexp(x, self.sharpness)

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
        log_none = -ops.sum(ops.softplus(ops.cast(logits, "float32")), axis=(1, 2))
        # S = 0 (every softplus underflowed) would give log(0): keep S below -1e-30.
        log_none = ops.minimum(log_none, -1e-30)
        return ops.log(-ops.expm1(log_none)) - log_none

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
