"""needles_tf.predict: exported models on users' images, tiled inference, overlays, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import struct
import subprocess
import sys
import zlib

import keras
import ml_collections
import numpy as np
import pytest
import tifffile
from absl import logging
from conftest import tiny_bagnet_config
from PIL import Image

from needles_tf import export, predict
from needles_tf.localization.streaming import StreamingModel, stream_image
from needles_tf.localization.tiling import Span, axis_spans
from needles_tf.metadata import model_metadata
from needles_tf.models.factory import build_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECEPTIVE_FIELD, STRIDE = 9, 8


def with_random_statistics(model: keras.Model, seed: int = 0) -> keras.Model:
    """Batch-normalization moving statistics away from (0, 1), so that they matter."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0.0, 0.2, size).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, size).astype("float32"))
    return model


def local_model(**fields) -> tuple[keras.Model, ml_collections.ConfigDict]:
    config = tiny_bagnet_config(normalization="batch", **fields)
    keras.utils.set_random_seed(1)
    return with_random_statistics(build_model(config)), config


def test_axis_spans_cover_every_cell_once_with_receptive_field_overlap():
    # (100 - 9) // 8 + 1 = 12 cells; a 40-pixel tile holds (40 - 9) // 8 + 1 = 4 of them.
    assert axis_spans(100, 40, RECEPTIVE_FIELD, STRIDE) == [
        Span(0, 33, 0, 4),
        Span(32, 65, 4, 4),
        Span(64, 97, 8, 4),
    ]
    assert axis_spans(50, 40, RECEPTIVE_FIELD, STRIDE) == [Span(0, 33, 0, 4), Span(32, 49, 4, 2)]
    with pytest.raises(ValueError, match="tile_size=8: expected at least the receptive field, 9"):
        axis_spans(100, 8, RECEPTIVE_FIELD, STRIDE)


def test_tiles_that_disagree_with_the_geometry_are_an_error():
    model, _ = local_model()
    depth = model.backbone.embedding_dim
    coarse = dataclasses.replace(
        StreamingModel.from_keras(model), embed=lambda images: np.zeros((1, 2, 2, depth), "f4")
    )
    image = np.zeros((100, 100, 1), np.float32)
    with pytest.raises(RuntimeError, match="does not have receptive field 9, stride 8"):
        stream_image(coarse, image, 40, RECEPTIVE_FIELD, STRIDE)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny batch-normalized instance-head model, exported as SavedModel and .keras."""
    model, model_config = local_model(head="instance", pooling="lse_lba", pooling_kwargs={"r0": 5})
    config = ml_collections.ConfigDict({"model": model_config, "dataset": "nmnist/canvas_64"})
    run = tmp_path_factory.mktemp("run")
    saved_model = export.export_model(model, config, run, class_names=["present"])
    return model, saved_model, run / export.KERAS_FILE


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A mid-size PNG (grey), JPEG (colour) and 16-bit TIFF, and the pixels the model sees."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (150, 190), dtype=np.uint8)
    Image.fromarray(grey).save(folder / "grey.png")
    colour = rng.integers(0, 256, (120, 100, 3), dtype=np.uint8)
    Image.fromarray(colour).save(folder / "colour.jpg", quality=95)
    deep = rng.integers(0, 65536, (90, 130), dtype=np.uint16)
    tifffile.imwrite(folder / "deep.tif", deep)
    return folder, {"grey.png": grey, "deep.tif": deep}


def test_read_image_scales_to_model_range(images):
    folder, pixels = images
    grey = predict.read_image(folder / "grey.png")
    assert grey.shape == (150, 190, 1) and grey.dtype == np.float32
    np.testing.assert_array_equal(grey[..., 0], pixels["grey.png"])
    np.testing.assert_allclose(
        predict.read_image(folder / "deep.tif")[..., 0], pixels["deep.tif"] / 257
    )
    assert predict.read_image(folder / "colour.jpg").shape == (120, 100, 3)


@pytest.mark.slow
@pytest.mark.parametrize("artefact", ["saved_model", "keras"])
def test_exported_models_tiled_match_keras_whole_image(exported, images, artefact):
    model, saved_model, keras_file = exported
    _, pixels = images
    loaded = predict.load_exported(saved_model if artefact == "saved_model" else keras_file)
    image = pixels["grey.png"][..., None].astype("float32")
    whole = model(image[None], training=False)

    for tile_size in (1024, 48):
        result = predict.predict_image(loaded, image, tile_size)
        assert result["tiles"] == (1 if tile_size == 1024 else 20)
        np.testing.assert_allclose(result["probability"], whole["probability"][0], atol=1e-6)
        np.testing.assert_allclose(
            result["saliency_grid"], whole["saliency"][0], rtol=1e-5, atol=1e-6
        )
        # The instance head's map is already in [0, 1]: its instance probabilities, as they are.
        np.testing.assert_allclose(result["saliency_unit"], whole["saliency"][0], atol=1e-6)


def test_read_image_applies_the_exif_orientation(tmp_path):
    """A phone photo stores its pixels sideways; Orientation 6 says: turn 90 degrees clockwise."""
    pixels = np.zeros((20, 40), np.uint8)
    pixels[:, :10] = 255  # a bright left edge, seen as the top edge once turned
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    Image.fromarray(pixels).save(tmp_path / "photo.png", exif=exif)
    upright = predict.read_image(tmp_path / "photo.png")[..., 0]
    assert upright.shape == (40, 20)
    np.testing.assert_array_equal(upright, np.rot90(pixels, k=-1).astype(np.float32))
    assert upright[:10].min() == 255 and upright[10:].max() == 0


def test_maximum_saliency_names_the_peak_window():
    grid = np.zeros((4, 5, 1), np.float32)
    grid[2, 3, 0] = 7.0
    peak = predict.maximum_saliency(grid, 0, (9, 8))
    assert peak == {"x": 28.5, "y": 20.5, "window": [16, 24, 25, 33], "value": 7.0}


@pytest.mark.slow
def test_command_line_json_and_overlays(exported, images, tmp_path):
    _, saved_model, _ = exported
    folder, _ = images
    files = [str(folder / name) for name in ("grey.png", "colour.jpg", "deep.tif")]
    out = tmp_path / "overlays"
    command = [sys.executable, "-m", "needles_tf.predict", f"--model={saved_model}", "--json"]
    result = subprocess.run(
        [*command, f"--out_dir={out}", "--tile_size=64", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = json.loads(result.stdout)
    assert [r["image"] for r in records] == files
    assert [r["tiles"] for r in records] == [3 * 4, 2 * 2, 2 * 3]  # 7 cells per 64-pixel tile
    for record in records:
        assert set(record["probability"]) == {"present"}
        assert 0.0 <= record["probability"]["present"] <= 1.0
        overlay = np.asarray(Image.open(record["overlay"]))
        assert overlay.shape == (record["height"], record["width"], 3)
        y0, x0, _, _ = record["max_saliency"]["window"]
        np.testing.assert_array_equal(overlay[y0, x0], predict.WINDOW_COLOUR)


@pytest.mark.slow
def test_a_keras_file_predicts_under_jax_without_tensorflow(exported, images):
    """The models are keras.ops only: a .keras file needs neither TensorFlow nor its backend."""
    _, _, keras_file = exported
    folder, _ = images
    script = (
        "import json, runpy, sys\n"
        "sys.argv = ['predict', '--json', '--tile_size=64', *sys.argv[1:]]\n"
        "try:\n"
        "    runpy.run_module('needles_tf.predict', run_name='__main__')\n"
        "finally:\n"
        "    print(json.dumps({'tensorflow': 'tensorflow' in sys.modules}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, f"--model={keras_file}", str(folder / "grey.png")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    *prediction, imported = result.stdout.strip().splitlines()
    assert json.loads(imported) == {"tensorflow": False}
    under_jax = json.loads("\n".join(prediction))[0]
    here = predict.predict_image(
        predict.load_exported(keras_file), predict.read_image(folder / "grey.png"), 64
    )  # the same file, under TensorFlow
    assert under_jax["tiles"] == here["tiles"] == 3 * 4
    assert under_jax["probability"]["present"] == pytest.approx(here["probability"][0], abs=1e-5)


def test_instance_normalization_tiling_warns(tmp_path, monkeypatch):
    config = tiny_bagnet_config()  # instance normalization: statistics of the whole input
    keras_model = build_model(config)
    metadata = model_metadata(keras_model, ml_collections.ConfigDict({"model": config}))
    assert metadata["local_cells"] is False
    model = predict.ExportedModel(StreamingModel.from_keras(keras_model), metadata)
    Image.fromarray(np.zeros((100, 80), np.uint8)).save(tmp_path / "a.png")
    warnings = []
    monkeypatch.setattr(logging, "warning", lambda message, *args: warnings.append(message % args))
    predict.predict_files(model, [tmp_path / "a.png"], tile_size=40)
    assert len(warnings) == 1 and "approximate whole-image ones" in warnings[0]


def test_bad_inputs_name_the_file(tmp_path, exported):
    _, saved_model, _ = exported
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_text("not an image")
    with pytest.raises(ValueError, match=re.escape("corrupt.png: not a readable PNG")):
        predict.read_image(corrupt)
    with pytest.raises(FileNotFoundError, match=re.escape("missing.png: no such image file")):
        predict.read_image(tmp_path / "missing.png")
    tifffile.imwrite(tmp_path / "float.tif", np.zeros((20, 20), np.float32))
    with pytest.raises(ValueError, match=re.escape("float.tif: float32 pixels; expected 8-")):
        predict.read_image(tmp_path / "float.tif")
    with pytest.raises(ValueError, match=re.escape("no readable needles_tf.json")):
        predict.load_exported(tmp_path)
    loaded = predict.load_exported(saved_model)
    with pytest.raises(ValueError, match=r"image of 5x40 pixels: expected at least .* 9x9"):
        predict.predict_image(loaded, np.zeros((5, 40, 1), np.float32), 1024)


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header declares width x height pixels, with no pixel data worth decoding."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, data: (  # noqa: E731
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    )
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")
    )


def test_empty_files_and_decompression_bombs_are_refused(tmp_path, images):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape("empty.png: empty file (0 bytes)")):
        predict.read_image(tmp_path / "empty.png")
    _png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(
        ValueError, match=r"bomb.png: 100000x100000 pixels .* --max_pixels=268435456"
    ):
        predict.read_image(tmp_path / "bomb.png")
    folder, _ = images
    with pytest.raises(ValueError, match=r"deep.tif: 130x90 pixels .* --max_pixels=1000"):
        predict.read_image(folder / "deep.tif", max_pixels=1000)
    assert predict.read_image(folder / "deep.tif", max_pixels=130 * 90).shape == (90, 130, 1)


@pytest.mark.slow
def test_the_command_line_refuses_a_bomb_in_one_line(exported, tmp_path):
    _, saved_model, _ = exported
    _png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "needles_tf.predict",
            f"--model={saved_model}",
            str(tmp_path / "bomb.png"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "bomb.png: 100000x100000 pixels" in result.stderr
    assert "Traceback" not in result.stderr


def test_channels_are_converted_to_the_models(images):
    """Grey into a colour model is repeated to RGB; colour into a grey model averaged."""
    folder, _ = images
    grey_image = predict.read_image(folder / "grey.png")
    colour_image = predict.read_image(folder / "colour.jpg")
    for channels, image, same_as in (
        (3, grey_image, np.repeat(grey_image, 3, axis=-1)),
        (1, colour_image, colour_image.mean(axis=-1, keepdims=True)),
    ):
        model, config = local_model(input_channels=channels)
        metadata = model_metadata(model, ml_collections.ConfigDict({"model": config}))
        parts = predict.ExportedModel(StreamingModel.from_keras(model), metadata)
        converted = predict.predict_image(parts, image, 1024)
        explicit = predict.predict_image(parts, same_as, 1024)
        np.testing.assert_allclose(converted["probability"], explicit["probability"], atol=1e-6)


def test_tiles_smaller_than_the_receptive_field_are_refused(exported, images):
    _, saved_model, _ = exported
    folder, _ = images
    loaded = predict.load_exported(saved_model)
    with pytest.raises(ValueError, match=r"--tile_size=8: expected at least .* \(9 pixels\)"):
        predict.predict_files(loaded, [folder / "grey.png"], tile_size=8)
