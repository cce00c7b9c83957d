r"""Export a trained model for serving: `DIR/saved_model/<version>/` and `DIR/model.keras`.

    python -m needles_tf.export --model_dir=DIR [--version=1]

Signatures of the SavedModel (TF Serving's version-number layout):
  serving_default(image: uint8 [batch, height, width, channels])
  serving_encoded(image_bytes: string [batch], PNG or JPEG files of one size)
both returning
  probability    float32 [batch, K]
  saliency       float32 [batch, height, width, K], in [0, 1], at the input's size
  saliency_grid  float32 [batch, h, w, K], the model's native map, raw scale;
and the model in two halves (NeedleClassifier.embed and .classify_embedding), for
tiled inference on images too large for one piece (needles_tf.predict):
  features(image: float32 [batch, height, width, 1 or 3], values in [0, 255])
      -> embedding  float32 [batch, h, w, D], the extractor's grid
  head(embedding) -> probability, saliency_grid and saliency_unit ([0, 1], on the grid).
`assets.extra/needles_tf.json` (and `needles_tf.json` inside model.keras)
describes the model: its config, class names and saliency geometry.
The SavedModel is plain TensorFlow: it loads without needles_tf. Both
artefacts are written under temporary names and renamed into place.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
import zipfile
from collections.abc import Sequence

import keras
import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import app, flags, logging
from keras import ops

from needles_tf.atomic import atomic_path
from needles_tf.checkpointing import usual_permissions, writable_directory
from needles_tf.data import pipeline
from needles_tf.localization.upsample import saliency_to_input
from needles_tf.models.factory import build_model

SAVED_MODEL = "saved_model"
KERAS_FILE = "model.keras"
METADATA_FILE = "needles_tf.json"


def served_saliency(outputs: dict, head: str) -> tuple:
    """(raw grid, grid in [0, 1]) of the map the export serves.

    The instance head's probabilities as they are; for the embedding head the
    attention weights (divided by their maximum per image) when pooling has them,
    else the class activation map through a sigmoid.
    """
    if head == "instance":
        grid = ops.cast(outputs["saliency"], "float32")
        return grid, grid
    if "attention" in outputs:
        grid = ops.cast(outputs["attention"], "float32")
        return grid, grid / ops.maximum(ops.max(grid, axis=(1, 2), keepdims=True), 1e-12)
    grid = ops.cast(outputs["saliency"], "float32")
    return grid, ops.sigmoid(grid)


def model_metadata(
    model: keras.Model, config: ml_collections.ConfigDict, class_names: Sequence[str] | None = None
) -> dict:
    """What a loader needs to know about an exported model (written as needles_tf.json)."""
    receptive_field, stride = model.geometry
    classes = int(config.model.num_classes)
    names = list(class_names or [f"class_{k}" for k in range(classes)])
    if len(names) != classes:
        raise ValueError(f"class_names={names}: expected {classes} name(s).")
    return {
        "model": config.model.to_dict(),
        "dataset": config.get("dataset"),
        "class_names": names,
        "receptive_field": receptive_field,
        "stride": stride,
        "local_cells": model.local_cells,
    }


def read_metadata(path: str | os.PathLike) -> dict:
    """needles_tf.json of a SavedModel directory or a .keras file written by export_model."""
    path = pathlib.Path(path)
    try:
        if path.is_dir():
            return json.loads((path / "assets.extra" / METADATA_FILE).read_text())
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(METADATA_FILE))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path}: no readable {METADATA_FILE}; expected a SavedModel directory or a "
            f".keras file exported by needles_tf.export ({error})."
        ) from error


def serving_module(
    model: keras.Model, config: ml_collections.ConfigDict
) -> keras.export.ExportArchive:
    """An ExportArchive tracking `model` with the serving signatures and its two halves."""
    channels = int(config.model.input_channels)
    receptive_field, stride = model.geometry
    head = config.model.head

    def outputs_for(images):
        outputs = model(images, training=False)
        grid, unit = served_saliency(outputs, head)
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        return {
            "probability": tf.cast(outputs["probability"], tf.float32),
            "saliency": saliency_to_input(unit, height, width, receptive_field, stride),
            "saliency_grid": grid,
        }

    def serve(image):
        return outputs_for(image)

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
        grid, unit = served_saliency(outputs, head)
        return {
            "probability": tf.cast(outputs["probability"], tf.float32),
            "saliency_grid": grid,
            "saliency_unit": unit,
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        serve,
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
    embedding_channels = model.backbone.embedding_dim
    archive.add_endpoint(
        "head",
        serve_head,
        input_signature=[
            tf.TensorSpec([None, None, None, embedding_channels], tf.float32, name="embedding")
        ],
    )
    return archive


def _replace_directory(temporary: pathlib.Path, final: pathlib.Path) -> None:
    """Moves `temporary` to `final`; an existing `final` is swapped out first, then deleted."""
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.rename(final, old)
    os.rename(temporary, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_model(
    model: keras.Model,
    config: ml_collections.ConfigDict,
    model_dir: str | os.PathLike,
    version: int = 1,
    class_names: Sequence[str] | None = None,
) -> pathlib.Path:
    """Writes `model_dir/saved_model/<version>/` and `model_dir/model.keras`; returns the former."""
    metadata = json.dumps(model_metadata(model, config, class_names), indent=2)
    model_dir = pathlib.Path(model_dir)
    base = model_dir / SAVED_MODEL
    base.mkdir(parents=True, exist_ok=True)
    temporary = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=base))
    usual_permissions(temporary)
    try:
        serving_module(model, config).write_out(str(temporary), verbose=False)
        (temporary / "assets.extra").mkdir(exist_ok=True)
        (temporary / "assets.extra" / METADATA_FILE).write_text(metadata)
        final = base / str(version)
        _replace_directory(temporary, final)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    with atomic_path(model_dir / KERAS_FILE) as temporary_file:
        model.save(temporary_file)
        with zipfile.ZipFile(temporary_file, "a") as archive:  # Keras ignores other members
            archive.writestr(METADATA_FILE, metadata)
    return final


def is_exported(model_dir: str | os.PathLike, version: int = 1) -> bool:
    model_dir = pathlib.Path(model_dir)
    return (model_dir / SAVED_MODEL / str(version) / "saved_model.pb").exists() and (
        model_dir / KERAS_FILE
    ).exists()


def load_run(model_dir: pathlib.Path) -> tuple[keras.Model, ml_collections.ConfigDict]:
    """The model of a training run with its best weights, and its config."""
    config_path = model_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"--model_dir={model_dir}: no config.json; is it a training run?")
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    best = sorted(model_dir.glob("best-epoch*.weights.h5"))
    if not best:
        raise FileNotFoundError(
            f"--model_dir={model_dir}: no best-epochNNNN.weights.h5; train at least one epoch."
        )
    model = build_model(config.model)
    model.load_weights(best[-1])
    return model, config


def _class_names(dataset: str) -> tuple[str, ...] | None:
    """The dataset's class names where it is built under --tfds_data_dir, else None."""
    try:
        builder = tfds.builder(dataset, data_dir=flags.FLAGS.tfds_data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        builder = None
    if builder is None or not builder.is_prepared():
        logging.warning("%s is not built here: classes are named class_0, class_1, ...", dataset)
        return None
    return pipeline.class_names(builder)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    model_dir = flags.FLAGS.model_dir
    if not model_dir:
        raise app.UsageError("--model_dir: expected a training run's directory.")
    if flags.FLAGS.version < 1:
        raise app.UsageError(f"--version={flags.FLAGS.version}: expected a positive integer.")
    try:
        model, config = load_run(writable_directory(model_dir, create=False))
    except (FileNotFoundError, ValueError) as error:
        raise app.UsageError(str(error)) from error
    path = export_model(model, config, model_dir, flags.FLAGS.version, _class_names(config.dataset))
    print(f"Exported {path} and {pathlib.Path(model_dir) / KERAS_FILE}")


if __name__ == "__main__":
    # Defined here, not at import, so that needles_tf.train can import this module.
    flags.DEFINE_string("model_dir", None, "A training run's directory.")
    flags.DEFINE_integer("version", 1, "Version number of the SavedModel directory.")
    flags.DEFINE_string("tfds_data_dir", None, "Where the run's dataset is built (class names).")
    app.run(main)
