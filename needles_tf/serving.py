"""The SavedModel's signatures: what TF Serving and needles_tf.predict call.

  serving_default(image: uint8 [batch, height, width, channels])
  serving_encoded(image_bytes: string [batch], PNG or JPEG files of one size)
both returning
  probability    float32 [batch, K]
  saliency       float32 [batch, height, width, K], in [0, 1], at the input's size
  saliency_grid  float32 [batch, h, w, K], the same map on the model's grid, raw scale;
and the model in two halves (NeedleClassifier.embed and .classify_embedding), for
tiled inference on images too large for one piece (needles_tf.predict):
  features(image: float32 [batch, height, width, 1 or 3], values in [0, 255])
      -> embedding  float32 [batch, h, w, D], the backbone's grid
  head(embedding) -> probability, saliency_grid and saliency_unit ([0, 1], on the grid).

The map is the model's default saliency method (`model.head.default_saliency`),
computed by the same code that `evaluate` scores (needles_tf.localization.methods).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from needles_tf.localization.methods import default_saliency_method, served_grid


def serving_module(model: keras.Model) -> keras.export.ExportArchive:
    """An ExportArchive tracking `model` with the serving signatures and its two halves."""
    channels = model.preprocessor.channels
    method = default_saliency_method(model)

    def outputs_for(images):
        outputs = model(images, training=False)
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        maps = method.from_outputs(outputs, height, width, model.geometry)
        return {
            "probability": tf.cast(outputs["probability"], tf.float32),
            "saliency": maps.unit,
            "saliency_grid": method.grid(outputs),
        }

    def serve_encoded(image_bytes):
        images = tf.map_fn(
            lambda data: tf.io.decode_image(data, channels=channels, expand_animations=False),
            image_bytes,
            fn_output_signature=tf.TensorSpec([None, None, channels], tf.uint8),
        )
        return outputs_for(images)

    def serve_features(image):
        return {"embedding": tf.cast(model.embed(image), tf.float32)}

    def serve_head(embedding):
        outputs = model.classify_embedding(embedding)
        return {"probability": outputs["probability"], **served_grid(model, outputs)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        outputs_for,
        input_signature=[tf.TensorSpec([None, None, None, channels], tf.uint8, name="image")],
    )
    archive.add_endpoint(
        "serving_encoded",
        serve_encoded,
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
    )
    archive.add_endpoint(
        "features",
        serve_features,
        input_signature=[tf.TensorSpec([None, None, None, None], tf.float32, name="image")],
    )
    archive.add_endpoint(
        "head",
        serve_head,
        input_signature=[
            tf.TensorSpec(
                [None, None, None, model.backbone.embedding_dim], tf.float32, name="embedding"
            )
        ],
    )
    save_variables_once(archive)
    return archive


def save_variables_once(archive: keras.export.ExportArchive) -> None:
    """Keeps each variable once in the SavedModel.

    Keras 3.15's ExportArchive lists the tracked model's Keras variables and, at
    `write_out`, the TensorFlow variables its endpoints capture; the SavedModel then
    stores every value twice (14.1 MB for the 7.0 MB of cpu_canvas64's variables).
    The captured ones suffice for the signatures, so the first lists are emptied.
    A private attribute: tests/test_upstream_workarounds.py checks that it still
    exists and that the values are still doubled without this.
    """
    trackable = archive._tf_trackable
    trackable.variables, trackable.trainable_variables = [], []
    trackable.non_trainable_variables = []
