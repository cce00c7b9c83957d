r"""Export a trained model for serving: `DIR/saved_model/<version>/` and `DIR/model.keras`.

    python -m needles_tf.export --model_dir=DIR [--version=1]

The SavedModel (TF Serving's version-number layout) has the signatures of
needles_tf.serving and is plain TensorFlow: it loads without needles_tf.
`assets.extra/needles_tf.json` (and `needles_tf.json` inside model.keras)
describes the model (needles_tf.metadata). Both artefacts are written under
temporary names and renamed into place.
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

from needles_tf import metadata as metadata_module
from needles_tf.atomic import atomic_path, replace_directory, usual_permissions, writable_directory
from needles_tf.cli import define_flags, one_line_usage_errors
from needles_tf.data import pipeline
from needles_tf.models.factory import float32_model
from needles_tf.packaged import KERAS_FILE
from needles_tf.run_directory import RunDirectory
from needles_tf.serving import serving_module

SAVED_MODEL = "saved_model"
# The signatures already hold the gradients they compute (saliency), traced at export.
# Saving each custom gradient once more, for tapes over the loaded model, took 40% of an
# export's time (14 of 32 s for the test suite's model); such a tape differentiates the
# forward ops instead, which gives the same values.
SAVE_OPTIONS = tf.saved_model.SaveOptions(experimental_custom_gradients=False)


def export_model(
    model: keras.Model,
    config: ml_collections.ConfigDict,
    model_dir: str | os.PathLike,
    version: int = 1,
    class_names: Sequence[str] | None = None,
) -> pathlib.Path:
    """Writes `model_dir/saved_model/<version>/` and `model_dir/model.keras`; returns the former.

    Both compute in float32 (models.factory.float32_model), so they agree."""
    model = float32_model(model, config.model)
    metadata = json.dumps(metadata_module.model_metadata(model, config, class_names), indent=2)
    model_dir = pathlib.Path(model_dir)
    base = model_dir / SAVED_MODEL
    base.mkdir(parents=True, exist_ok=True)
    temporary = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=base))
    usual_permissions(temporary)
    try:
        serving_module(model).write_out(str(temporary), options=SAVE_OPTIONS, verbose=False)
        (temporary / "assets.extra").mkdir(exist_ok=True)
        (temporary / "assets.extra" / metadata_module.METADATA_FILE).write_text(metadata)
        final = base / str(version)
        replace_directory(temporary, final)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    with atomic_path(model_dir / KERAS_FILE) as temporary_file:
        model.save(temporary_file)
        with zipfile.ZipFile(temporary_file, "a") as archive:  # Keras ignores other members
            archive.writestr(metadata_module.METADATA_FILE, metadata)
    return final


def is_exported(model_dir: str | os.PathLike, version: int = 1) -> bool:
    model_dir = pathlib.Path(model_dir)
    return (model_dir / SAVED_MODEL / str(version) / "saved_model.pb").exists() and (
        model_dir / KERAS_FILE
    ).exists()


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
        writable_directory(model_dir, create=False)
        model, config = RunDirectory(model_dir).load_model()
    except (FileNotFoundError, ValueError) as error:
        raise app.UsageError(str(error)) from error
    path = export_model(model, config, model_dir, flags.FLAGS.version, _class_names(config.dataset))
    print(f"Exported {path} and {pathlib.Path(model_dir) / KERAS_FILE}")


if __name__ == "__main__":
    # Defined here, not at import, so that needles_tf.train can import this module.
    define_flags("model_dir", "tfds_data_dir")
    flags.DEFINE_integer("version", 1, "Version number of the SavedModel directory.")
    app.run(one_line_usage_errors(main))
