"""Every preset of every config family resolves to a config the trainer accepts."""

from __future__ import annotations

import importlib

import pytest

from needles_tf import configs, train
from needles_tf.configs import nmnist
from needles_tf.models.factory import build_model

PRESETS = [
    (family, preset)
    for family in configs.CONFIGS
    for preset in importlib.import_module(f"needles_tf.configs.{family}").PRESETS
]


@pytest.mark.parametrize(("family", "preset"), PRESETS)
def test_preset_is_a_valid_config(family, preset):
    module = importlib.import_module(f"needles_tf.configs.{family}")
    config = module.get_config(preset)
    train.validate_config(config)
    for path, value in module.PRESETS[preset].items():
        field = config
        for part in path.split("."):
            field = field[part]
        assert field == value, path


def test_sparse_preset_builds_a_model_sparse_steps_accept():
    """cpu_canvas256 trains with sparse steps: its model must have local cells."""
    config = nmnist.get_config("cpu_canvas256")
    assert config.backprop == "sparse"
    assert build_model(config.model).local_cells
