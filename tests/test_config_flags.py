"""The command line of a config: presets, --config.FIELD overrides and plain flags, in
that order; bad values named in one line."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from conftest import tiny_config

from needles_tf import configs
from needles_tf.cli import ConfigError
from needles_tf.configs import flags as config_flags
from needles_tf.configs import nmnist
from needles_tf.training.checks import check_config, training_mode

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model.width": -1.0}, r"--width=-1.0: expected a positive"),
        ({"model.pooling": "median"}, r"--pooling='median': expected one of \[.*'lse_lba'"),
        ({"model.dtype_policy": "int8"}, r"--dtype_policy='int8': expected one of"),
        ({"optimizer": "lbfgs"}, r"--config.optimizer='lbfgs'"),
        (
            {"effective_batch_size": 6},
            r"effective_batch_size=6: expected a multiple of --batch_size=4",
        ),
        ({"positive_fraction": 1.5}, r"--positive_fraction=1.5"),
        ({"positive_fraction": 0.3}, r"--positive_fraction=0.3: expected 0.5 unless --train_size"),
        ({"batch_size": 0}, r"--batch_size=0: expected at least 1"),
        ({"model.receptive_field": 17}, r"--receptive_field=17: expected one of"),
        ({"best_metric": "loss"}, r"--config.best_metric=.loss.: expected .accuracy. or .auc."),
        (
            {"best_metric": "pixel_loss"},
            r"best_metric='pixel_loss': .* 'pixel_loss' with --mode=pixelcam",
        ),
        ({"lr_schedule": "linear"}, r"--config.lr_schedule='linear': expected one of \['cosine'"),
        ({"warmup_epochs": 2.0}, r"--config.warmup_epochs=2.0: expected .* fewer than --epochs=2"),
    ],
)
def test_bad_config_values_name_the_flag(fields, message):
    config = tiny_config()
    for path, value in fields.items():
        configs.set_field(config, path, value)
    with pytest.raises(ConfigError, match=message):
        check_config(config, training_mode(config))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "needles_tf.train", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


@pytest.mark.slow
def test_command_line_rejects_bad_flags_at_once(tmp_path):
    result = run_cli("--pooling=median", f"--model_dir={tmp_path}")
    assert result.returncode != 0
    assert "--pooling=median" in result.stderr and "lse_lba" in result.stderr
    result = run_cli("--width=-2", "--preset=cpu_quick", f"--model_dir={tmp_path}")
    assert result.returncode != 0 and "--width=-2.0: expected a positive" in result.stderr
    # A family by name, with a preset from the family it builds on.
    result = run_cli(
        "--config=ncamelyon",
        "--preset=cpu_quick",
        "--width=-2",
        f"--model_dir={tmp_path}",
    )
    assert result.returncode != 0 and "--width=-2.0: expected a positive" in result.stderr
    result = run_cli("--preset=gpu_huge", f"--model_dir={tmp_path}")
    assert result.returncode != 0 and "--preset='gpu_huge': expected one of" in result.stderr
    assert not any(tmp_path.iterdir())
    result = run_cli("--config.model.pooling_kwargs.r0=5", f"--model_dir={tmp_path}")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "--config.model.pooling_kwargs.r0: the config has no field 'r0'" in last, last
    # One line, not absl's docstring and 500 lines of flag help.
    result = run_cli("--dataset=nonexistent", f"--model_dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: --dataset='nonexistent': no such TFDS dataset"), last
    assert "Train a needles_tf model" not in result.stderr + result.stdout


def test_preset_then_config_overrides_then_flags():
    from absl import flags

    preset = nmnist.PRESETS["cpu_quick"]
    argv = [
        "train",
        "--config=nmnist",
        "--preset=cpu_quick",
        "--config.learning_rate=0.01",
        "--config.model.width=0.5",
        "--width=0.125",
        "--pooling=max",
        "--head=embedding",
    ]
    flags.FLAGS.unparse_flags()
    config_flags.parse_flags(argv)
    try:
        config = config_flags.resolved_config()
    finally:
        flags.FLAGS.unparse_flags()
    assert config.epochs == preset["epochs"] and config.optimizer == preset["optimizer"]
    assert config.learning_rate == 0.01  # --config.* beats the preset
    assert config.model.width == 0.125 and config.model.pooling == "max"  # plain flags last


def test_config_argument_names_a_family_and_folds_the_preset_into_it():
    path = str(configs.config_path("multires"))
    folded = config_flags.config_argv(["train", "--config=multires", "--preset=cpu_quick"])
    assert folded == ["train", f"--config={path}:cpu_quick", "--preset=cpu_quick"]
    default = config_flags.config_argv(["train", "--preset=cpu_quick", "--epochs=1"])
    assert default[1] == f"--config={configs.config_path('nmnist')}:cpu_quick"
    spaced = config_flags.config_argv(["train", "--config", "multires", "--preset", "cpu_quick"])
    assert spaced == folded
    mine = config_flags.config_argv(["train", "--config=/somewhere/mine.py:small"])
    assert mine == ["train", "--config=/somewhere/mine.py:small"]
    with pytest.raises(ValueError, match="give one preset"):
        config_flags.config_argv(["train", "--config=nmnist:a", "--preset=b"])
    with pytest.raises(ValueError, match=r"--config='resnet': expected a .py file or one of"):
        config_flags.config_argv(["train", "--config=resnet:cpu_quick"])
