"""Experiment configs, one ml_collections module per family (big_vision style), installed.

    python -m needles_tf.train                               # nmnist, the default
    python -m needles_tf.train --config=multires             # a family by name
    python -m needles_tf.train --config=multires:cpu_quick   # ... with a preset
    python -m needles_tf.train --preset=cpu_quick            # the same as nmnist:cpu_quick
    python -m needles_tf.train --config=path/to/mine.py      # your own file

Each module has `get_config(preset="")`, `PRESETS`, a dict from preset name to
{dotted field: value}, and `DATASETS`, the TFDS datasets its presets may train on.
`--preset` is the config argument's `:preset`, so a preset is only ever applied by its
family's get_config. Every field has its default written once, in `nmnist.py` (the
base of every family) or in its training mode's module (its section); configs come
locked, so that a misspelled field fails instead of being added.
"""

from __future__ import annotations

import importlib
import pathlib
from collections.abc import Mapping
from typing import Any

import ml_collections

# Family name -> its module in this package.
CONFIGS = ("nmnist", "ncamelyon", "multires", "pixelcam", "sparse_shot")
DEFAULT = "nmnist"


def config_path(name: str) -> pathlib.Path:
    """The installed file of the family `name` (what --config=NAME resolves to)."""
    if name not in CONFIGS:
        raise ValueError(f"--config={name!r}: expected a .py file or one of {sorted(CONFIGS)}.")
    return pathlib.Path(__file__).with_name(f"{name}.py")


def check_preset(name: str, preset: str) -> None:
    """Raises ValueError naming --preset unless the family `name` has `preset`."""
    presets = importlib.import_module(f"{__name__}.{name}").PRESETS
    if preset not in presets:
        expected = f"one of {name}'s presets {sorted(presets)}"
        raise ValueError(f"--preset={preset!r}: expected {expected}.")


def apply_preset(
    config: ml_collections.ConfigDict, preset: str, presets: Mapping[str, Mapping[str, Any]]
) -> None:
    """Sets each dotted field of `presets[preset]` in `config`."""
    if preset not in presets:
        raise ValueError(f"--preset={preset!r}: expected one of {sorted(presets)}.")
    for path, value in presets[preset].items():
        set_field(config, path, value)


def finished(
    config: ml_collections.ConfigDict, preset: str, presets: Mapping[str, Mapping[str, Any]]
) -> ml_collections.ConfigDict:
    """`config` with `preset` applied (if any), locked: no field can be added any more, but
    to `model.pooling_kwargs`, whose keys are those of the pooling chosen."""
    if preset:
        apply_preset(config, preset, presets)
    config.lock()
    config.model.pooling_kwargs.unlock()
    return config


def set_field(config: ml_collections.ConfigDict, path: str, value: Any) -> None:
    """Sets the dotted field `path` (e.g. "model.width") of `config`."""
    *parents, leaf = path.split(".")
    for parent in parents:
        config = config[parent]
    config[leaf] = value
