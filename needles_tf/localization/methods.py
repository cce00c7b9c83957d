"""Saliency methods by name (`--saliency`), each defined once: its raw map and its [0, 1] form.

    maps = get_saliency_method("cam")(model, images, k=0)
    maps.raw    (B, H, W) float32 at the input's size, on the method's own scale:
                what ranks detections across images (localization AP, pointing game)
    maps.unit   (B, H, W) in [0, 1]: what is thresholded and drawn (DICE, IoBB, PxAP,
                overlays) and what a SavedModel serves as `saliency`

`model` is a needles_tf.models.classifier.NeedleClassifier and `images` a
batch (B, H, W, C) with values in [0, 255]. Methods the model computes on its
grid (`GridSaliencyMethod`: instance, cam, attention) are upsampled from the
grid with `saliency_to_input`; `unit` is the upsampled [0, 1] grid. The
SavedModel's `saliency` output is the unit map of `model.head.default_saliency`,
computed by the same code (needles_tf.export).
"""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from needles_tf.localization.gradients import input_gradient
from needles_tf.localization.upsample import cells_to_input, saliency_to_input
from needles_tf.models.heads import EmbeddingPoolingHead, InstancePoolingHead
from needles_tf.models.pixelcam import PixelCAMHead
from needles_tf.registry import Registry


@dataclasses.dataclass(frozen=True)
class SaliencyMaps:
    """One method's maps of a batch: raw scale and [0, 1], both (B, H, W) float32."""

    raw: object
    unit: object


class SaliencyMethod:
    """A saliency method: `__call__(model, images, k)` -> SaliencyMaps."""

    name: str = ""

    def check(self, model: keras.Model) -> None:
        """Raises ValueError naming the flag when `model` cannot give this map."""

    def raw(self, model: keras.Model, images, k: int):
        raise NotImplementedError

    def unit(self, raw):
        """The [0, 1] form of raw maps (B, H, W): divided by each image's peak."""
        peak = ops.max(ops.reshape(raw, (ops.shape(raw)[0], -1)), axis=1)
        return raw / ops.reshape(ops.maximum(peak, 1e-12), (-1, 1, 1))

    def __call__(
        self, model: keras.Model, images, k: int = 0, outputs: dict | None = None
    ) -> SaliencyMaps:
        """Maps of class k; `outputs`, the model's outputs for `images`, saves a forward pass."""
        self.check(model)
        raw = ops.cast(self.raw(model, images, k), "float32")
        return SaliencyMaps(raw=raw, unit=self.unit(raw))


class GridSaliencyMethod(SaliencyMethod):
    """A map on the model's grid, read from its outputs; the [0, 1] form is taken on the grid."""

    output: str = "saliency"

    def grid(self, outputs: dict):
        """(B, h, w, K) float32, raw scale, from the model's (or head's) outputs."""
        grid = ops.cast(outputs[self.output], "float32")
        classes = ops.shape(outputs["probability"])[-1]
        shape = ops.shape(grid)
        return ops.broadcast_to(grid, (shape[0], shape[1], shape[2], classes))

    def unit_grid(self, grid, outputs: dict | None = None):
        """The [0, 1] form; `outputs` may carry what a piece of a grid needs of the whole."""
        raise NotImplementedError

    def from_outputs(self, outputs: dict, height, width, geometry) -> SaliencyMaps:
        """Both maps for all K classes, (B, height, width, K), from the model's outputs."""
        grid = self.grid(outputs)
        return SaliencyMaps(
            raw=saliency_to_input(grid, height, width, *geometry),
            unit=saliency_to_input(self.unit_grid(grid), height, width, *geometry),
        )

    def __call__(
        self, model: keras.Model, images, k: int = 0, outputs: dict | None = None
    ) -> SaliencyMaps:
        self.check(model)
        if outputs is None:
            outputs = model(images, training=False)
        shape = ops.shape(images)
        maps = self.from_outputs(outputs, shape[1], shape[2], model.geometry)
        return SaliencyMaps(raw=maps.raw[..., k], unit=maps.unit[..., k])


SALIENCY_METHODS: Registry[SaliencyMethod] = Registry("--saliency")


def register_saliency(cls: type[SaliencyMethod]) -> type[SaliencyMethod]:
    """Class decorator: `--saliency=cls.name` uses an instance of `cls`."""
    SALIENCY_METHODS.register(cls.name)(cls())
    return cls


def get_saliency_method(name: str) -> SaliencyMethod:
    return SALIENCY_METHODS.get_or_raise(name)


def default_saliency_method(model: keras.Model) -> GridSaliencyMethod:
    """The map a model serves and evaluate scores unless told otherwise: its head's own."""
    return SALIENCY_METHODS[model.head.default_saliency]


def served_grid(model: keras.Model, outputs: dict) -> dict:
    """The default method's map on the grid: `saliency_grid` (raw) and `saliency_unit`."""
    method = default_saliency_method(model)
    grid = method.grid(outputs)
    return {"saliency_grid": grid, "saliency_unit": method.unit_grid(grid, outputs)}


def _needs_head(model: keras.Model, head_class: type, method: str, head: str) -> None:
    image_head = getattr(model.head, "image_head", model.head)  # under a pixel head
    if not isinstance(image_head, head_class):
        raise ValueError(f"--saliency={method!r} needs a model with head={head!r}.")


@register_saliency
class InstanceMap(GridSaliencyMethod):
    """The instance head's probability map S (Yao et al. 2018 §3.6), already in [0, 1]."""

    name = "instance"

    def check(self, model):
        _needs_head(model, InstancePoolingHead, self.name, "instance")

    def unit_grid(self, grid, outputs=None):
        return ops.clip(grid, 0.0, 1.0)


@register_saliency
class ClassActivationMap(GridSaliencyMethod):
    """The embedding head's classifier at every position (its logits); [0, 1] by a sigmoid.

    sigmoid(CAM) at a position is the probability the image would get from that
    position alone, so with max pooling its peak is the image's probability.
    """

    name = "cam"

    def check(self, model):
        _needs_head(model, EmbeddingPoolingHead, self.name, "embedding")

    def unit_grid(self, grid, outputs=None):
        return ops.sigmoid(grid)


@register_saliency
class AttentionMap(GridSaliencyMethod):
    """The weights of attention pooling (Ilse et al. 2018), shared by the classes.

    They sum to 1 over the positions; the [0, 1] form divides by each image's largest.
    """

    name = "attention"
    output = "attention"

    def check(self, model):
        if not model.head.has_attention:
            raise ValueError(
                f"--saliency='attention' needs pooling='attention' or 'gated_attention', "
                f"not {model.head.pooling_name!r}."
            )

    def unit_grid(self, grid, outputs=None):
        """Divided by the largest weight: the grid's own, or for a piece of a grid
        (streaming), the whole grid's, `outputs["attention_peak"]` (B, 1)."""
        if outputs is not None and "attention_peak" in outputs:
            peak = outputs["attention_peak"][:, None, None, :]
        else:
            peak = ops.max(grid, axis=(1, 2), keepdims=True)
        return ops.minimum(grid / ops.maximum(peak, 1e-12), 1.0)  # a piece's: rounding


@register_saliency
class PixelCAMMap(GridSaliencyMethod):
    """PixelCAM's foreground logits (Guichemerre et al., MIDL 2025), class-agnostic;
    [0, 1] by a sigmoid, the foreground probability.

    At input resolution the logits are placed by `cells_to_input` (bilinear from one
    per cell, or sub-pixels) and then squashed, as the paper's softmax of upsampled
    logits; on the grid (streaming, slide heatmaps, predict's peak) a cell holds the
    largest of its logits.
    """

    name = "pixelcam"
    output = "pixel_logits"

    def check(self, model):
        if not isinstance(model.head, PixelCAMHead):
            raise ValueError(
                "--saliency='pixelcam' needs a model with a PixelCAM head (--config=pixelcam)."
            )

    def grid(self, outputs: dict):
        cells = ops.max(ops.cast(outputs[self.output], "float32"), axis=-1, keepdims=True)
        return super().grid({**outputs, self.output: cells})

    def unit_grid(self, grid, outputs=None):
        return ops.sigmoid(grid)

    def from_outputs(self, outputs: dict, height, width, geometry) -> SaliencyMaps:
        fine = cells_to_input(outputs[self.output], height, width, *geometry)
        raw = super().grid({**outputs, self.output: fine})  # broadcast to the classes
        return SaliencyMaps(raw=raw, unit=ops.sigmoid(raw))


@register_saliency
class InputGradient(SaliencyMethod):
    """|d logit_k / d input|, summed over channels (Pawlowski et al. 2019 App. C.4)."""

    name = "gradient"

    @staticmethod
    def gradient(model, images, k):
        """d logit_k / d images, images as float32."""
        return input_gradient(lambda x: model(x, training=False)["logits"][:, k], images)

    def raw(self, model, images, k):
        images = ops.cast(images, "float32")
        return ops.sum(ops.abs(self.gradient(model, images, k)), axis=-1)


@register_saliency
class GradientTimesInput(InputGradient):
    """|d logit_k / d input · input|, summed over channels: the first-order share of
    each pixel in the logit against a black image (Shrikumar et al., "Not Just a Black
    Box", 2016; Ancona et al., "Towards better understanding of gradient-based
    attribution methods", ICLR 2018, §3). Zero where the input is zero, so on dark
    backgrounds (nMNIST) it keeps the gradient's strokes and drops its halo."""

    name = "gradient_input"

    def raw(self, model, images, k):
        images = ops.cast(images, "float32")
        return ops.sum(ops.abs(self.gradient(model, images, k) * images), axis=-1)


def soft_threshold(x, threshold: float):
    """s_λ(x) = sign(x) · max(|x| - λ, 0)."""
    return ops.sign(x) * ops.maximum(ops.abs(x) - threshold, 0.0)


@register_saliency
class SparseInversion(SaliencyMethod):
    """Sparse network inversion (Shin et al. 2020): the minimal input that keeps the prediction.

    From X⁰ = the image (scaled to [0, 1]), X^{t+1} = s_λ(X^t - η ∇l(X^t)) with
    l the cross-entropy between the bag score P(X) and the predicted label Ŷ;
    what survives the soft-thresholding is the key evidence. The raw map is
    |X^T| summed over channels.
    """

    name = "sparse_inversion"

    def __init__(self, steps: int = 20, step_size: float = 0.1, sparsity: float = 0.01):
        self.steps, self.step_size, self.sparsity = steps, step_size, sparsity

    def raw(self, model, images, k):
        x = ops.cast(images, "float32") / 255.0
        predicted = ops.cast(model(images, training=False)["probability"][:, k] >= 0.5, "float32")

        def loss(value):
            logits = model(value * 255.0, training=False)["logits"][:, k]
            return ops.binary_crossentropy(predicted, logits, from_logits=True)

        for _ in range(self.steps):
            x = soft_threshold(x - self.step_size * input_gradient(loss, x), self.sparsity)
        return ops.sum(ops.abs(x), axis=-1)
