"""Losses beyond Keras's own, in keras.ops (backend-neutral), and the DENSE_LOSSES registry.

Dense localization (one logit per grid cell against a target map: 1 where an annotated
needle is, 0 everywhere else) chooses its loss by name:

    cross_entropy            keras.losses.BinaryCrossentropy
    focal                    keras.losses.BinaryFocalCrossentropy (Lin et al., ICCV 2017)
    exclusive_cross_entropy  ExclusiveCrossEntropy below (Panteli et al., ICCV 2021)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
from keras import ops

from needles_tf.registry import Registry


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


def annealed(value: float, epoch, midpoint: float, temperature: float):
    """value · sigmoid((epoch - midpoint) / temperature): a smooth step from 0 to `value`
    centred on `midpoint`; temperature 0 means no annealing (always `value`)."""
    if temperature <= 0:
        return ops.convert_to_tensor(value, "float32")
    epoch = ops.cast(epoch, "float32")
    return value * ops.sigmoid((epoch - midpoint) / temperature)


@dataclasses.dataclass(frozen=True)
class Exclusivity:
    """The exclusive cross-entropy's hyperparameters; the defaults are the authors'."""

    exclusivity_threshold: float = 0.5  # on the logit; annealed from 0
    background_sampling: float = 0.5  # the share of background terms drawn; annealed from 0
    exclusivity_midpoint: float = 50.0  # epochs
    background_midpoint: float = 150.0  # epochs
    annealing_temperature: float = 10.0  # epochs; 0: no annealing
    focal_alpha: float = 0.2
    focal_gamma: float = 0.1


def exclusive_cross_entropy_terms(
    targets, logits, epoch, noise, hyper: Exclusivity = Exclusivity(), epsilon: float = 1e-6
):
    """The exclusive cross-entropy of every position (same shape as `logits`).

    Panteli, Teuwen, Horlings and Gavves, "Sparse-shot Learning with Exclusive
    Cross-Entropy for Extremely Many Localisations" (ICCV 2021). `targets` is 1 at an
    annotated object and 0 at every other position, where an unannotated object may
    hide. Annotated positions keep their cross-entropy. An unannotated position keeps
    its term only if

    * it is *exclusive*: its logit is at most the exclusivity threshold. The second
      derivative of a negative's cross-entropy in its logit z, p(1 - p) with
      p = sigmoid(z), peaks at z = 0 and falls beyond it, where the model already
      says "object": those are the likely unannotated objects, whose terms bias
      learning, and they are dropped (the threshold grows from 0 to 0.5 as it is
      annealed, p from 0.5 to 0.62); and
    * it is drawn in the background sample, with probability `background_sampling`
      (`noise` < it, `noise` uniform in [0, 1) of the same shape),

    and a kept term is re-weighted focally, alpha · (1 - e^-CE)^gamma · CE. Both
    thresholds are annealed from 0 with the epoch (`annealed`), so that negatives
    enter training gradually. The defaults are the authors' (their release of the
    loss: thresholds 0.5, midpoints at epochs 50 and 150, temperature 10, focal alpha
    0.2, gamma 0.1). The selection carries no gradient. With an infinite exclusivity
    threshold, sampling 1, no annealing, alpha 1 and gamma 0 this is the cross-entropy.
    """
    logits = ops.cast(logits, "float32")
    targets = ops.cast(ops.reshape(targets, ops.shape(logits)), "float32")
    cross_entropy = ops.binary_crossentropy(targets, logits, from_logits=True)
    threshold = annealed(
        hyper.exclusivity_threshold, epoch, hyper.exclusivity_midpoint, hyper.annealing_temperature
    )
    sampling = annealed(
        hyper.background_sampling, epoch, hyper.background_midpoint, hyper.annealing_temperature
    )
    kept = (
        (1.0 - targets)
        * ops.cast(logits <= threshold, "float32")
        * ops.cast(ops.reshape(noise, ops.shape(logits)) < sampling, "float32")
    )
    kept = ops.stop_gradient(kept)
    # 1 - e^-CE is p for a negative; held above epsilon so that gamma < 1 keeps a finite
    # gradient where p underflows to 0.
    confidence = ops.maximum(1.0 - ops.exp(-cross_entropy), epsilon)
    focal = hyper.focal_alpha * ops.power(confidence, hyper.focal_gamma) * cross_entropy
    return targets * cross_entropy + kept * focal


@keras.saving.register_keras_serializable("needles_tf")
class ExclusiveCrossEntropy(keras.losses.Loss):
    """Exclusive cross-entropy on logits (`exclusive_cross_entropy_terms`), averaged over
    every position.

    `epoch` is read at every call: a number, or a non-trainable keras.Variable that
    training advances (needles_tf.training.modes.cell_targets). The background sample is drawn from
    the loss's own seed generator.
    """

    def __init__(
        self,
        seed: int | None = None,
        name: str = "exclusive_cross_entropy",
        reduction: str = "sum_over_batch_size",
        dtype=None,
        **hyperparameters: float,
    ):
        """`hyperparameters`: the fields of `Exclusivity` (a wrong name is a TypeError)."""
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.hyper = Exclusivity(**{k: float(v) for k, v in hyperparameters.items()})
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.epoch = 0.0

    def call(self, y_true, y_pred):
        noise = keras.random.uniform(ops.shape(y_pred), seed=self.seed_generator)
        return exclusive_cross_entropy_terms(y_true, y_pred, self.epoch, noise, self.hyper)

    def get_config(self) -> dict:
        return {**super().get_config(), **dataclasses.asdict(self.hyper), "seed": self.seed}


# name -> a function of the cell_targets settings and the run's seed making the loss (its
# hyperparameters are the settings' `focal` and `exclusive_cross_entropy` sections)
DENSE_LOSSES: Registry[Callable[..., keras.losses.Loss]] = Registry("--config.cell_targets.loss")


@DENSE_LOSSES.register("cross_entropy")
def _cross_entropy(settings, seed: int) -> keras.losses.Loss:
    return keras.losses.BinaryCrossentropy(from_logits=True, name="cross_entropy")


@DENSE_LOSSES.register("focal")
def _focal(settings, seed: int) -> keras.losses.Loss:
    focal = settings.focal
    return keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=focal.alpha > 0,
        alpha=focal.alpha,
        gamma=focal.gamma,
        from_logits=True,
        name="focal",
    )


@DENSE_LOSSES.register("exclusive_cross_entropy")
def _exclusive_cross_entropy(settings, seed: int) -> keras.losses.Loss:
    return ExclusiveCrossEntropy(**settings.exclusive_cross_entropy, seed=seed)
