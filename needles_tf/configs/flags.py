"""The command line of a config: --config=NAME[:PRESET], --preset, --config.FIELD=VALUE
and the plain flags of the everyday fields.

Precedence, from weakest to strongest: the family's defaults, its preset,
`--config.FIELD=VALUE` overrides, then the plain flags (`--pooling`, `--epochs`, ...),
each of which sets the config field whose last part is its name.
"""

from __future__ import annotations

import sys

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from needles_tf import configs
from needles_tf.layers.pooling import POOLINGS
from needles_tf.models.backbone import BACKBONES
from needles_tf.models.bagnet import THREE_BY_THREE_BLOCKS
from needles_tf.models.heads import HEADS
from needles_tf.precision import POLICIES as PRECISIONS
from needles_tf.training import distribute
from needles_tf.training.modes import TRAINING_MODES

# The command line as parse_flags rewrote it: config_flags finds the --config.FIELD
# overrides here rather than in sys.argv, which still has --preset and family names.
_CONFIG_ARGV: list[str] = []
CONFIG = config_flags.DEFINE_config_file(
    "config",
    str(configs.config_path(configs.DEFAULT)),
    f"Experiment config: one of {list(configs.CONFIGS)} or a .py file, optionally with "
    ":PRESET; override fields with --config.FIELD=VALUE, e.g. --config.model.pooling=lse_lba.",
    lock_config=True,
    sys_argv=_CONFIG_ARGV,
)
flags.DEFINE_string("preset", None, "A preset of the config: --config=CONFIG:PRESET.")

# Everyday knobs: each flag sets the config field whose last part is its name.
FLAG_FIELDS = (
    "model.pooling",
    "model.receptive_field",
    "model.width",
    "model.head",
    "model.extractor",
    "model.dtype_policy",
    "dataset",
    "train_size",
    "positive_fraction",
    "epochs",
    "batch_size",
    "seed",
    "strategy",
    "mode",
    "init_from",
)
flags.DEFINE_enum("pooling", None, sorted(POOLINGS), "model.pooling: global pooling.")
flags.DEFINE_integer(
    "receptive_field", None, f"model.receptive_field: BagNet's, {sorted(THREE_BY_THREE_BLOCKS)}."
)
flags.DEFINE_float("width", None, "model.width: capacity s (> 0).")
flags.DEFINE_enum("head", None, sorted(HEADS), "model.head: embedding or instance pooling.")
flags.DEFINE_enum("extractor", None, sorted(BACKBONES), "model.extractor.")
flags.DEFINE_enum("dtype_policy", None, PRECISIONS, "model.dtype_policy: Keras dtype policy.")
flags.DEFINE_string("dataset", None, "dataset: TFDS name/config, e.g. nmnist/canvas_256.")
flags.DEFINE_integer("train_size", None, "train_size: distinct training images; 0 = all.")
flags.DEFINE_float("positive_fraction", None, "positive_fraction: of the training set.")
flags.DEFINE_integer("epochs", None, "epochs: training epochs.")
flags.DEFINE_integer("batch_size", None, "batch_size: global batch of one step.")
flags.DEFINE_integer("seed", None, "seed: of initialization and data order.")
flags.DEFINE_enum("strategy", None, sorted(distribute.STRATEGIES), "strategy: tf.distribute.")
flags.DEFINE_enum(
    "mode", None, sorted(TRAINING_MODES), "mode: how the run trains (needles_tf.training.modes)."
)
flags.DEFINE_string("init_from", None, "init_from: a run whose best weights start this one.")


def config_argv(argv: list[str]) -> list[str]:
    """argv with --config=NAME[:PRESET] as the installed file and --preset folded into it.

    `--preset=P` becomes the config argument's `:P`, the one way a preset is applied
    (by the family's get_config), before any --config.FIELD override.
    """
    argv = _joined(argv, ("config", "preset"))
    preset, index, value = None, None, None
    for i, arg in enumerate(argv):
        if arg.startswith(("--preset=", "-preset=")):
            preset = arg.split("=", 1)[1]
        elif arg.startswith(("--config=", "-config=")):
            index, value = i, arg.split("=", 1)[1]
    if value is None:
        value = configs.DEFAULT
    name, _, own_preset = value.partition(":")
    if preset and own_preset and preset != own_preset:
        raise ValueError(f"--preset={preset!r} and --config={value!r}: give one preset.")
    if not name.endswith(".py"):  # a family by name
        path = str(configs.config_path(name))
        if preset or own_preset:
            configs.check_preset(name, preset or own_preset)
        name = path
    value = name + (f":{preset or own_preset}" if preset or own_preset else "")
    if index is None:
        argv.insert(1, f"--config={value}")
    else:
        argv[index] = f"--config={value}"
    return argv


def _joined(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """argv with `--NAME VALUE` written as `--NAME=VALUE` for each of `names`."""
    spelled = {f"{dashes}{name}" for name in names for dashes in ("-", "--")}
    joined: list[str] = []
    for arg in argv:
        if joined and joined[-1] in spelled:
            joined[-1] = f"{joined[-1]}={arg}"
        else:
            joined.append(arg)
    return joined


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flags parser for a config's entry point: family names, presets, then FLAGS."""
    try:
        argv = config_argv(argv)
    except ValueError as error:  # as absl reports a bad flag
        sys.exit(f"FATAL Flags parsing error: {error}\nPass --helpshort or --helpfull for help.")
    _CONFIG_ARGV[:] = argv
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as error:  # an override of a field the config lacks
        overrides = [arg.split("=", 1)[0] for arg in argv if arg.startswith("--config.")]
        field = str(error).strip("\"'")
        sys.exit(
            f"FATAL Flags parsing error: {', '.join(overrides)}: the config has no field "
            f"{field!r}. --config.FIELD sets fields the config has; new keys (pooling "
            "arguments, say) go in a config file, --config=FILE.py."
        )


def resolved_config() -> ml_collections.ConfigDict:
    """The config (with its preset and --config.FIELD overrides), then the plain flags."""
    config = CONFIG.value
    for path in FLAG_FIELDS:
        value = flags.FLAGS[path.rsplit(".", 1)[-1]].value
        if value is not None:
            configs.set_field(config, path, value)
    return config
