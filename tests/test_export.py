"""A finished run's export: the SavedModel without needles_tf, saved_model_cli, the .keras
file in safe mode and in a fresh process."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import tiny_config

from needles_tf.models.factory import build_model

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_export_loads_without_needles_tf(uninterrupted):
    model_dir, _ = uninterrupted
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import tensorflow as tf

        loaded = tf.saved_model.load(sys.argv[1])
        image = np.random.default_rng(0).integers(0, 256, (2, 80, 72, 1)).astype(np.uint8)
        out = loaded.signatures["serving_default"](image=tf.constant(image))
        png = tf.io.encode_png(image[0])
        encoded = loaded.signatures["serving_encoded"](image_bytes=tf.stack([png, png]))
        assert "needles_tf" not in sys.modules
        np.testing.assert_allclose(encoded["probability"][0], out["probability"][0], rtol=1e-5)
        print({k: list(v.shape) for k, v in out.items()})
        print(float(tf.reduce_min(out["saliency"])), float(tf.reduce_max(out["saliency"])))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(model_dir / "saved_model" / "1")],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    shapes, limits = result.stdout.strip().splitlines()[-2:]
    # 80x72 input, RF 9, stride 8: a 9x8 grid; saliency at the input's size, in [0, 1].
    assert eval(shapes) == {
        "probability": [2, 1],
        "saliency": [2, 80, 72, 1],
        "saliency_grid": [2, 9, 8, 1],
    }
    low, high = map(float, limits.split())
    assert 0.0 <= low <= high <= 1.0


@pytest.mark.slow
def test_saved_model_cli_runs_the_export(uninterrupted, tmp_path):
    model_dir, _ = uninterrupted
    np.save(tmp_path / "image.npy", np.zeros((1, 64, 64, 1), np.uint8))
    cli = pathlib.Path(sys.executable).with_name("saved_model_cli")
    result = subprocess.run(
        [
            str(cli),
            "run",
            "--dir",
            str(model_dir / "saved_model" / "1"),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"image={tmp_path / 'image.npy'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for output in ("probability", "saliency", "saliency_grid"):
        assert f"Result for output key {output}:" in result.stdout


@pytest.mark.slow
def test_keras_file_loads_in_safe_mode_and_matches(uninterrupted):
    model_dir, metrics = uninterrupted
    loaded = keras.saving.load_model(model_dir / "model.keras", safe_mode=True)
    reference = build_model(tiny_config().model)
    reference.load_weights(model_dir / f"best-epoch{metrics['best_epoch']:04d}.weights.h5")
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 1)).astype(np.uint8)
    np.testing.assert_allclose(
        loaded.predict_on_batch(images)["probability"],
        reference.predict_on_batch(images)["probability"],
        rtol=1e-5,
    )


@pytest.mark.slow
def test_keras_file_loads_in_a_fresh_process_after_import_needles_tf(uninterrupted):
    """README's load: `import needles_tf` registers every layer (it used to fail with
    "Could not locate class 'ImagePreprocessing'")."""
    model_dir, _ = uninterrupted
    script = (
        "import sys, keras, numpy as np, needles_tf\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "print(model.predict_on_batch(np.zeros((1, 64, 64, 1), np.uint8))['probability'].shape)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(model_dir / "model.keras")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "(1, 1)"


@pytest.mark.slow
def test_export_names_a_bad_version(uninterrupted):
    model_dir, _ = uninterrupted
    result = subprocess.run(
        [sys.executable, "-m", "needles_tf.export", f"--model_dir={model_dir}", "--version=-1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode != 0 and "--version=-1: expected a positive integer" in result.stderr
