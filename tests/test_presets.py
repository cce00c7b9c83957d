"""Every config family: its presets resolve to configs the trainer accepts, on the family's
own datasets; configs are locked; configs/README.md lists what exists."""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest

from needles_tf import configs
from needles_tf.configs import nmnist
from needles_tf.models.factory import build_model
from needles_tf.training.checks import check_config, training_mode

PACKAGE = pathlib.Path(configs.__file__).parents[1]
FAMILIES = {name: importlib.import_module(f"needles_tf.configs.{name}") for name in configs.CONFIGS}
PRESETS = [(family, preset) for family, module in FAMILIES.items() for preset in module.PRESETS]


@pytest.mark.parametrize(("family", "preset"), PRESETS)
def test_preset_is_a_valid_config(family, preset):
    module = FAMILIES[family]
    config = module.get_config(preset)
    check_config(config, training_mode(config))
    for path, value in module.PRESETS[preset].items():
        field = config
        for part in path.split("."):
            field = field[part]
        assert field == value, path


@pytest.mark.parametrize(("family", "preset"), [*PRESETS, *((f, "") for f in FAMILIES)])
def test_a_preset_trains_on_its_familys_datasets(family, preset):
    module = FAMILIES[family]
    dataset = module.get_config(preset).dataset
    assert any(dataset == d or dataset.startswith(f"{d}/") for d in module.DATASETS), (
        f"{family}:{preset} trains on {dataset}, not one of {module.DATASETS}"
    )


def test_configs_are_locked():
    config = nmnist.get_config()
    with pytest.raises(AttributeError):
        config.learnig_rate = 0.1  # a misspelled field is not added
    with pytest.raises(AttributeError):
        config.model.pooling_kwarg = {}


def test_sparse_preset_builds_a_model_sparse_steps_accept():
    """cpu_canvas256 trains with sparse steps: its model must have local cells."""
    config = nmnist.get_config("cpu_canvas256")
    assert config.mode == "sparse_backprop"
    assert build_model(config.model).local_cells


def test_the_configs_readme_lists_every_family_and_its_presets():
    text = (PACKAGE / "configs" / "README.md").read_text()
    listed = {}
    for row in re.findall(r"^\| `(\w+)`.*\| (.*) \|$", text, flags=re.M):
        name, presets = row
        listed[name] = set(re.findall(r"`(\w+)`", presets))
    assert listed == {name: set(module.PRESETS) for name, module in FAMILIES.items()}


def test_no_default_is_written_twice():
    """The package reads a run's config fields as attributes: a `config.get(FIELD, default)`
    of a field the base config has would be a second default, free to disagree. (A `model`
    config may leave fields out: their defaults are the constructors', see models/factory.py.)"""
    fields = set(nmnist.get_config())
    found = [
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in PACKAGE.rglob("*.py")
        for name in re.findall(r"config\.get\(\s*[\"'](\w+)[\"']", path.read_text())
        if name in fields
    ]
    assert not found
