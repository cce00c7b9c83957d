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
  head(embedding) -> probability, saliency_grid and saliency_unit ([0, 1], on the grid);
and the head in pieces, for images of any size in bounded memory (needles_tf/
localization/streaming.py), with the pooling state and a piece's maps each packed
into one float32 tensor ([batch, S] and [batch, h, w, M]):
  tile_state(embedding) -> state, maps      one piece of the grid
  merge_states(state_a, state_b) -> state   two pieces together
  finish(state) -> probability, logits      the image, from all its pieces
  tile_maps(maps, state) -> saliency_grid, saliency_unit   a piece's slice of the
      image's maps, given the final state

The map is the model's default saliency method (`model.head.default_saliency`),
computed by the same code that `evaluate` scores (needles_tf.localization.methods).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from needles_tf.localization.methods import default_saliency_method, served_grid
from needles_tf.localization.streaming import StreamingModel, head_packings


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

    embedding_dim = model.backbone.embedding_dim
    streaming = StreamingModel.from_keras(model)
    states, pieces = head_packings(model.head, embedding_dim)

    def serve_tile_state(embedding):
        state, maps = streaming.tile_state(embedding)
        return {"state": state, "maps": maps}

    def serve_merge_states(state_a, state_b):
        return {"state": streaming.merge_states(state_a, state_b)}

    def serve_finish(state):
        outputs = streaming.finish(state)
        return {"probability": outputs["probability"], "logits": outputs["logits"]}

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
    state_spec = tf.TensorSpec([None, sum(states.widths)], tf.float32, name="state")
    embedding_spec = tf.TensorSpec([None, None, None, embedding_dim], tf.float32, name="embedding")
    maps_spec = tf.TensorSpec([None, None, None, sum(pieces.widths)], tf.float32, name="maps")
    archive.add_endpoint("tile_state", serve_tile_state, input_signature=[embedding_spec])
    archive.add_endpoint(
        "merge_states",
        serve_merge_states,
        input_signature=[
            tf.TensorSpec(state_spec.shape, tf.float32, name="state_a"),
            tf.TensorSpec(state_spec.shape, tf.float32, name="state_b"),
        ],
    )
    archive.add_endpoint("finish", serve_finish, input_signature=[state_spec])
    archive.add_endpoint(
        "tile_maps", streaming.served_maps, input_signature=[maps_spec, state_spec]
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
