"""needles_tf.json: what a loader needs to know about an exported model.

Written into the SavedModel's `assets.extra/` and into the `.keras` archive
by needles_tf.export; read by predict, which needs the class names and the
saliency geometry without importing the training config.
"""

from __future__ import annotations

import json
import os
import pathlib
import zipfile
from collections.abc import Sequence

import keras
import ml_collections

METADATA_FILE = "needles_tf.json"


def model_metadata(
    model: keras.Model, config: ml_collections.ConfigDict, class_names: Sequence[str] | None = None
) -> dict:
    """The model's config, dataset, class names and saliency geometry."""
    receptive_field, stride = model.geometry
    classes = int(config.model.num_classes)
    names = list(class_names or [f"class_{k}" for k in range(classes)])
    if len(names) != classes:
        raise ValueError(f"class_names={names}: expected {classes} name(s).")
    return {
        "model": config.model.to_dict(),
        "dataset": config.dataset if "dataset" in config else None,  # none for a bare model
        "class_names": names,
        "receptive_field": receptive_field,
        "stride": stride,
        "local_cells": model.local_cells,
        "saliency": model.head.default_saliency,
    }


def read_metadata(path: str | os.PathLike) -> dict:
    """needles_tf.json of a SavedModel directory or a .keras file written by the export."""
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
