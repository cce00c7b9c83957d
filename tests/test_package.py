"""A run becomes a packaged model: saved_models/NAME, usable by name, with its card."""

from __future__ import annotations

import json
import pathlib

import keras
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_package_builds_a_named_model_from_a_run(uninterrupted, tfds_dir, tmp_path, monkeypatch):
    """A run becomes saved_models/NAME, usable by name in evaluate, predict and models.load,
    with a card rendered from its files."""
    from needles_tf import evaluate, model_card, models, package, packaged, predict

    model_dir, _ = uninterrupted
    recipe = packaged.PackagedModel(
        summary="A tiny test model.",
        train=("python -m needles_tf.train --preset=tiny",),
        run=str(model_dir),
        evaluations={
            "": packaged.Evaluation(saliency=("instance", "gradient")),
            "first_4": packaged.Evaluation(saliency=("instance",), max_examples=4, why="a few"),
            "other_canvas": packaged.Evaluation(
                saliency=("instance",), dataset="nmnist/canvas_64", why="another canvas"
            ),
        },
    )
    monkeypatch.setitem(packaged.PACKAGED_MODELS, "tiny", recipe)
    monkeypatch.setenv("NEEDLES_TF_SAVED_MODELS", str(tmp_path / "saved"))
    monkeypatch.setattr(package, "SPEED_SECONDS", 0.1)
    folder = package.package("tiny", data_dir=tfds_dir)

    assert folder == tmp_path / "saved" / "tiny"
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["tiny"]  # no temporary
    main = json.loads((folder / "metrics.json").read_text())
    assert main["examples"] == 16 and set(main["localization"]) == {"instance", "gradient"}
    low, high = main["classification"]["ci95"]["accuracy"]
    assert low <= main["classification"]["accuracy"] <= high
    assert (folder / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((folder / "evaluations/first_4/metrics.json").read_text())["examples"] == 4
    speed = json.loads((folder / "speed.json").read_text())
    assert speed["images_per_second"] > 0 and speed["image_size"] == [64, 64]
    card = (folder / "MODEL_CARD.md").read_text()
    assert card == model_card.render("tiny", folder, recipe)
    assert "python -m needles_tf.train --preset=tiny" in card and "`first_4`: a few." in card
    assert f"| accuracy | {main['classification']['accuracy']:.4f} |" in card
    assert "| nmnist/canvas_64 | 19.1% | 16 |" in card  # the other-canvas table

    # The name works wherever a model is expected.
    model = models.load("tiny")
    assert model.name == keras.saving.load_model(model_dir / "model.keras").name
    exported = predict.load_exported("tiny")
    assert exported.metadata["dataset"] == "nmnist/canvas_64"
    again = evaluate.evaluate(
        model="tiny", out_dir=tmp_path / "again", resamples=0, data_dir=tfds_dir
    )
    assert again["classification"]["accuracy"] == main["classification"]["accuracy"]
    assert "ci95" not in again["classification"]
    with pytest.raises(FileNotFoundError, match=r"--model=tinyy: no such file .* \(one of .*tiny"):
        packaged.resolve("tinyy")

    # Exported again (new signatures, same weights): the same answers.
    image = np.random.default_rng(0).uniform(0, 255, (64, 64, 1)).astype("float32")
    before = predict.predict_image(exported, image, 32)
    package.reexport(folder)
    after = predict.predict_image(predict.load_exported("tiny"), image, 32)
    np.testing.assert_allclose(after["probability"], before["probability"], atol=1e-6)
    np.testing.assert_allclose(after["saliency_grid"], before["saliency_grid"], atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["tiny"]
    with pytest.raises(ValueError, match=r"--model_dir .* or --model .*, one of the two"):
        evaluate.evaluate(model_dir, model="tiny", data_dir=tfds_dir)
