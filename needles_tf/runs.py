"""A finished (or interrupted) training run's directory, read back: its config and best model."""

from __future__ import annotations

import json
import pathlib

import keras
import ml_collections

from needles_tf.models.factory import build_model, float32_config


def load_run(model_dir: pathlib.Path) -> tuple[keras.Model, ml_collections.ConfigDict]:
    """The model of a training run with its best weights, computing in float32 whatever the
    training precision (as the export does), and its config."""
    config_path = model_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"--model_dir={model_dir}: no config.json; is it a training run?")
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    model = build_model(float32_config(config.model))
    model.load_weights(best_weights(model_dir))
    return model, config


def best_weights(model_dir: pathlib.Path, flag: str = "--model_dir") -> pathlib.Path:
    """The run's best-epochNNNN.weights.h5 (the latest, should there be several)."""
    best = sorted(pathlib.Path(model_dir).glob("best-epoch*.weights.h5"))
    if not best:
        raise FileNotFoundError(
            f"{flag}={model_dir}: no best-epochNNNN.weights.h5; train at least one epoch."
        )
    return best[-1]
