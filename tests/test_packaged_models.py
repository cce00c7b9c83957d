"""The packaged models of saved_models/: they load without needles_tf, their two artefacts
agree, they classify the shipped examples, and their cards are their metrics."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from needles_tf import model_card, models, packaged
from needles_tf.localization.methods import served_grid
from needles_tf.metadata import read_metadata
from needles_tf.predict import read_image

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TRUTH = json.loads((EXAMPLES / "truth.json").read_text())
NAMES = sorted(packaged.PACKAGED_MODELS)
SIGNATURES = {"serving_default", "serving_encoded", "features", "head", "tile_state",
              "merge_states", "finish", "tile_maps"}  # fmt: skip


def canvas_size(name: str) -> int:
    config = json.loads((packaged.packaged_folder(name) / "training.json").read_text())["config"]
    return int(re.fullmatch(r"nmnist/canvas_(\d+)", config["dataset"]).group(1))


def examples_of_size(size: int) -> list[pathlib.Path]:
    return sorted(EXAMPLES / name for name, truth in TRUTH.items() if truth["size"] == size)


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_model_is_shipped_whole(name):
    folder = packaged.packaged_folder(name)
    for part in ("1/saved_model.pb", "model.keras", "metrics.json", "training.json",
                 "speed.json", "MODEL_CARD.md", "reliability.png"):  # fmt: skip
        assert (folder / part).is_file(), f"{folder / part} is missing"
    for label in packaged.PACKAGED_MODELS[name].evaluations:
        assert not label or (folder / "evaluations" / label / "metrics.json").is_file()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 20e6, f"{name}: {size / 1e6:.1f} MB; packaged models stay small"


@pytest.mark.slow
def test_saved_models_run_in_a_process_without_needles_tf():
    """Plain TensorFlow: the signatures TF Serving sees, with the documented outputs."""
    script = """
import json, sys
import numpy as np, tensorflow as tf
from PIL import Image
found = {}
for folder, image in zip(sys.argv[1::2], sys.argv[2::2]):
    loaded = tf.saved_model.load(folder)
    pixels = np.asarray(Image.open(image))[None, ..., None]
    outputs = loaded.signatures["serving_default"](image=tf.constant(pixels))
    # The same image through the streaming signatures, in one piece.
    embedding = loaded.features(tf.constant(pixels, tf.float32))["embedding"]
    state = loaded.tile_state(embedding)["state"]
    found[folder] = {
        "signatures": sorted(loaded.signatures),
        "shapes": {key: list(value.shape) for key, value in outputs.items()},
        "probability": float(outputs["probability"][0, 0]),
        "streamed": float(loaded.finish(state)["probability"][0, 0]),
    }
assert not any(name.startswith("needles_tf") for name in sys.modules), "needles_tf imported"
print(json.dumps(found))
"""
    arguments = []
    for name in NAMES:
        size = canvas_size(name)
        arguments += [str(packaged.packaged_folder(name) / "1"), str(examples_of_size(size)[0])]
    result = subprocess.run(
        [sys.executable, "-c", script, *arguments],
        capture_output=True, text=True, timeout=300, cwd="/",
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    for name in NAMES:
        size = canvas_size(name)
        outputs = found[str(packaged.packaged_folder(name) / "1")]
        assert set(outputs["signatures"]) >= SIGNATURES
        assert outputs["shapes"]["probability"] == [1, 1]
        assert outputs["shapes"]["saliency"] == [1, size, size, 1]
        assert 0.0 <= outputs["probability"] <= 1.0
        assert abs(outputs["streamed"] - outputs["probability"]) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_keras_file_loads_safely_and_agrees_with_the_saved_model(name):
    folder = packaged.packaged_folder(name)
    keras_model = models.load(name)  # keras.saving.load_model in safe mode
    signature = tf.saved_model.load(str(folder / "1")).signatures["serving_default"]
    images = np.stack([read_image(path) for path in examples_of_size(canvas_size(name))])
    served = signature(image=tf.constant(images.astype(np.uint8)))
    outputs = keras_model.predict_on_batch(images)
    np.testing.assert_allclose(outputs["probability"], served["probability"], atol=1e-5)
    grid = served_grid(keras_model, outputs)["saliency_grid"]  # the served map's, on the grid
    np.testing.assert_allclose(grid, served["saliency_grid"], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_it_classifies_the_examples_of_its_canvas_size(name):
    from needles_tf.predict import load_exported, predict_files

    paths = examples_of_size(canvas_size(name))
    records = predict_files(load_exported(name), paths)
    # The peak is expected on the needle where the served map mostly points at it on the
    # test split; the multi-resolution model's instance map does not (its card says so).
    folder = packaged.packaged_folder(name)
    served = read_metadata(folder / packaged.KERAS_FILE)["saliency"]
    metrics = json.loads((folder / "metrics.json").read_text())
    points = metrics["localization"][served]["pointing_game"] >= 0.5
    for path, record in zip(paths, records, strict=True):
        truth = TRUTH[path.name]
        probability = next(iter(record["probability"].values()))
        assert (probability >= 0.5) == bool(truth["label"]), (path.name, probability)
        if truth["label"] and points:  # the peak window overlaps the needle's box
            y0, x0, y1, x1 = record["max_saliency"]["window"]
            b0, a0, b1, a1 = truth["needle_box"]
            assert y0 < b1 and b0 < y1 and x0 < a1 and a0 < x1, (path.name, record)


@pytest.mark.parametrize("name", NAMES)
def test_the_card_is_rendered_from_the_metrics(name):
    """Every figure of MODEL_CARD.md comes from the package's files: re-rendering gives it."""
    folder = packaged.packaged_folder(name)
    recipe = packaged.PACKAGED_MODELS[name]
    assert (folder / "MODEL_CARD.md").read_text() == model_card.render(name, folder, recipe)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["examples"] == 4040  # the whole test split


@pytest.mark.parametrize("name", NAMES)
def test_the_recipes_take_the_mnist_directory_as_a_parameter(name):
    recipe = packaged.PACKAGED_MODELS[name]
    assert all("--tfds_manual_dir=PATH_TO_MNIST" in command for command in recipe.train)
    commands = recipe.commands("/data/my mnist")
    assert all("--tfds_manual_dir='/data/my mnist'" in command for command in commands)
    card = (packaged.packaged_folder(name) / "MODEL_CARD.md").read_text()
    assert "shared/" not in card and "--tfds_manual_dir=PATH_TO_MNIST" in card


def test_the_readme_table_of_packaged_models_is_rendered_from_their_metrics():
    readme = (ROOT / "README.md").read_text()
    assert model_card.packaged_table() in readme


def first_readme_command() -> str:
    """The command after the install in README.md's first bash block."""
    block = re.search(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S).group(1)
    install, command = block.split(" && python -m ", 1)
    assert install.endswith("pip install -e ."), install
    return "python -m " + command


@pytest.mark.slow
def test_the_first_readme_command_answers_correctly_offline(tmp_path):
    """README's first command, as written, in a directory with the examples and no network."""
    command = first_readme_command()
    (tmp_path / "examples").symlink_to(EXAMPLES)
    arguments = shlex.split(command.replace("examples/*.png", ""))
    images = sorted(str(p.relative_to(EXAMPLES.parent)) for p in EXAMPLES.glob("*.png"))
    result = subprocess.run(
        [sys.executable, *arguments[1:], *images],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "NO_PROXY": "*",
             "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = [line.split() for line in result.stdout.splitlines() if line.startswith("examples/")]
    rows = {row[0]: row for row in table}  # (the progress bar of the tiled mosaic aside)
    for image in images:
        probability = float(rows[image][3])
        label = TRUTH[pathlib.Path(image).name]["label"]
        assert (probability >= 0.5) == bool(label), (image, probability)
        overlay = tmp_path / "overlays" / f"{pathlib.Path(image).stem}_saliency.png"
        assert overlay.read_bytes()[:4] == b"\x89PNG"
