"""A plain (non-editable) `pip install .` trains from an unrelated directory with a preset."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_installed_package_trains_with_a_preset_from_another_directory(nmnist_64, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
            "--no-build-isolation", "--no-index", f"--target={target}", str(ROOT),
        ],
        check=True,
        cwd=tmp_path,
        timeout=600,
    )  # fmt: skip
    assert (target / "needles_tf" / "configs" / "nmnist.py").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "TF_CPP_MIN_LOG_LEVEL": "2"}
    where = subprocess.run(
        [sys.executable, "-c", "import needles_tf; print(needles_tf.__file__)"],
        capture_output=True, text=True, cwd=elsewhere, env=env, check=True,
    )  # fmt: skip
    assert pathlib.Path(where.stdout.strip()).is_relative_to(target)  # not the source tree

    tfds_dir = pathlib.Path(nmnist_64.data_dir).parents[2]
    result = subprocess.run(
        [
            sys.executable, "-m", "needles_tf.train", "--preset=cpu_quick",
            f"--tfds_data_dir={tfds_dir}", "--model_dir=run", "--epochs=1",
            "--width=0.0625", "--receptive_field=9", "--dtype_policy=float32",
            "--batch_size=4", "--config.effective_batch_size=4", "--config.overlay_images=0",
        ],
        capture_output=True, text=True, cwd=elsewhere, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((elsewhere / "run" / "config.json").read_text())
    assert config["optimizer"] == "adam" and config["model"]["normalization"] == "batch"  # preset
    assert config["model"]["receptive_field"] == 9 and config["epochs"] == 1  # flags
    assert (elsewhere / "run" / "saved_model" / "1" / "saved_model.pb").exists()
