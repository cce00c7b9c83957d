"""PixelCAM training: the image loss plus a partial cross-entropy on teacher seeds.

Guichemerre et al., "PixelCAM" (MIDL 2025): a weakly supervised model already
trained (the teacher: a needles_tf run or packaged model) gives each training
image a saliency map; a few foreground and background pixels are sampled from it
every step (needles_tf/localization/pseudo_labels.py); the student, the teacher's
architecture plus a PixelCAM head (needles_tf/models/pixelcam.py) and started
from the teacher's weights, learns

    loss = BCE(image logits, labels) + weight · partialCE(pixel logits, seeds)

with one optimizer. The seeds' randomness is keyed on (seed, optimizer step), so a
resumed run draws the pixels the uninterrupted one would have drawn.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from needles_tf.localization.methods import get_saliency_method
from needles_tf.localization.pseudo_labels import SeedRecipe, min_max, sample_seeds
from needles_tf.localization.upsample import cells_to_input
from needles_tf.run_directory import RunDirectory
from needles_tf.training.losses import partial_cross_entropy
from needles_tf.training.modes.base import TRAINING_MODES, Check
from needles_tf.training.modes.image import ImageLabels


def load_teacher(teacher: str, flag: str = "--config.pixelcam.teacher") -> keras.Model:
    """A run directory (its best weights) or what `needles_tf.models.load` takes."""
    from needles_tf import models

    if not teacher:
        raise ValueError(f"{flag} is empty: name a trained run or a packaged model.")
    run = RunDirectory(teacher, flag)
    if run.config_file.exists():
        model, _ = run.load_model()
    else:
        try:
            model = models.load(teacher, flag)
        except FileNotFoundError as error:
            raise ValueError(str(error)) from error
    return model


def initialize_from_teacher(student: keras.Model, teacher: keras.Model, flag: str) -> None:
    """The teacher's backbone and image head weights into the student; the pixel head
    keeps its fresh initialization."""
    try:
        student.backbone.set_weights(teacher.backbone.get_weights())
        student.head.image_head.set_weights(teacher.head.get_weights())
    except ValueError as error:
        raise ValueError(
            f"{flag}: the teacher's architecture differs from --config.model's ({error})."
        ) from error


class PixelCAMTraining(keras.Model):
    """Images -> {logits, pixel_logits} of `student`; its loss adds the pixel term."""

    def __init__(
        self,
        student: keras.Model,
        teacher: keras.Model,
        saliency: str = "",
        recipe: SeedRecipe | None = None,
        weight: float = 1.0,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        recipe = recipe or SeedRecipe()
        recipe.check()
        self.student, self.teacher = student, teacher
        teacher.trainable = False
        self.method = get_saliency_method(saliency or teacher.head.default_saliency)
        self.method.check(teacher)
        self.recipe, self.weight, self.seed = recipe, float(weight), int(seed)
        self.pixel_loss_tracker = keras.metrics.Mean(name="pixel_loss")

    def call(self, images, training=False):
        outputs = self.student(images, training=training)
        return {"logits": outputs["logits"], "pixel_logits": outputs["pixel_logits"]}

    def teacher_maps(self, images, labels):
        """(B, H, W): the teacher's maps, each in [0, 1], the max over the image's positive
        classes (over all classes in a negative image: where it looks for any)."""
        positive = ops.max(labels, axis=-1, keepdims=True) > 0.5
        weights = ops.where(positive, labels, 1.0)
        maps = [
            min_max(self.method(self.teacher, images, k).raw) * weights[:, k, None, None]
            for k in range(labels.shape[-1])
        ]
        return ops.stop_gradient(ops.max(ops.stack(maps), axis=0))

    def seeds(self, images, labels):
        labels = ops.cast(labels, "float32")
        maps = self.teacher_maps(ops.cast(images, "float32"), labels)
        step = 0 if self.optimizer is None else self.optimizer.iterations
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        noise = tf.random.stateless_uniform((2, *tf.unstack(tf.shape(maps))), seed)
        positive = ops.max(labels, axis=-1) > 0.5
        return sample_seeds(maps, positive, noise[0], noise[1], self.recipe)

    def pixel_loss(self, images, labels, pixel_logits):
        shape = ops.shape(images)
        logits = cells_to_input(pixel_logits, shape[1], shape[2], *self.student.geometry)
        return partial_cross_entropy(self.seeds(images, labels), logits[..., 0])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        image_loss = super().compute_loss(x, y, y_pred["logits"], sample_weight, training)
        pixel_loss = self.pixel_loss(x, y, y_pred["pixel_logits"])
        self.pixel_loss_tracker.update_state(pixel_loss)
        return image_loss + self.weight * pixel_loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, y_pred["logits"], sample_weight)


@TRAINING_MODES.register("pixelcam")
class PixelCAM(ImageLabels):
    """The image loss and metrics of `image`, plus the pixel head's partial cross-entropy on
    a teacher's seeds; a fresh run starts from the teacher's weights (the paper's start)."""

    name = "pixelcam"

    @classmethod
    def defaults(cls) -> dict:
        return {
            # a training run's directory, a .keras file or a packaged model's name
            "teacher": "",
            # the teacher's map the seeds come from: "" its own (the head's), or a name of
            # needles_tf.localization.methods (cam, instance, gradient, ...)
            "teacher_saliency": "",
            "foreground_pixels": 5,
            "background_pixels": 5,
            "background_fraction": 0.2,  # the authors' code default; their README: 0.4
            # background seeds of a needle-free image: "anywhere" (uniform, the paper's)
            # or "salient" (in proportion to the teacher's map: its false alarms)
            "negative_background": "anywhere",
            "weight": 1.0,  # of the partial cross-entropy
        }

    def checks(self) -> list[Check]:
        pixel_head = self.config.model.pixel_head
        return [
            Check(
                bool(pixel_head),
                "--config.model.pixel_head",
                pixel_head,
                "a pixel head (needles_tf.models.pixelcam.PIXEL_HEADS) with --mode=pixelcam",
            )
        ]

    def image_model(self, inference: keras.Model) -> keras.Model:
        settings = self.settings
        recipe = SeedRecipe(
            settings.foreground_pixels,
            settings.background_pixels,
            settings.background_fraction,
            settings.negative_background,
        )
        teacher = load_teacher(settings.teacher)
        return PixelCAMTraining(
            inference,
            teacher,
            settings.teacher_saliency,
            recipe,
            settings.weight,
            self.config.seed,
            name="training",
        )

    def start(self, inference: keras.Model, training: keras.Model) -> None:
        initialize_from_teacher(inference, training.teacher, "--config.pixelcam.teacher")
