"""Whole slides: region reading by level and resolution, tissue, streamed predictions,
pyramidal heatmaps, and outputs that appear only when complete."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
import tifffile
import tiffslide
from conftest import tiny_bagnet_config
from PIL import Image
from test_streaming import random_model

from needles_tf import export, predict
from needles_tf.localization.streaming import StreamingModel, stream_image
from needles_tf.slides import heatmap as heatmap_lib
from needles_tf.slides import reader
from needles_tf.slides.inference import TopRegions, predict_slide
from needles_tf.slides.reader import Slide, SlideError, is_slide, tissue_mask

RECEPTIVE_FIELD, STRIDE = 9, 8
MPP = 0.25  # microns per level-0 pixel


def write_slide(path: pathlib.Path, level0: np.ndarray, levels: int = 3, mpp=MPP) -> None:
    """A tiled pyramidal TIFF, each level half the previous (OpenSlide's generic layout)."""
    per_cm = 1e4 / mpp
    with tifffile.TiffWriter(path, bigtiff=True) as tiff:
        image = level0
        for index in range(levels):
            tiff.write(
                image, tile=(128, 128), photometric="rgb", compression="zlib",
                subfiletype=0 if index == 0 else 1,
                resolution=(per_cm / 2**index, per_cm / 2**index), resolutionunit="CENTIMETER",
            )  # fmt: skip
            image = image[::2, ::2]


def tissue_everywhere(height=600, width=520, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 120, (height, width, 3), dtype=np.uint8)


def half_glass(height=600, width=520, seed=0) -> np.ndarray:
    pixels = tissue_everywhere(height, width, seed)
    pixels[:, width // 2 :] = 245  # bright, unsaturated glass on the right half
    return pixels


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory):
    """A tiny attention model exported as SavedModel and .keras: (SavedModel, .keras file)."""
    model = random_model(head="embedding", pooling="attention")
    model_config = tiny_bagnet_config(normalization="batch", head="embedding", pooling="attention")
    config = ml_collections.ConfigDict({"model": model_config, "dataset": "nmnist/canvas_64"})
    run = tmp_path_factory.mktemp("run")
    saved_model = export.export_model(model, config, run, class_names=["present"])
    return saved_model, run / "model.keras"


@pytest.fixture(scope="module")
def exported_model():
    model = random_model(head="instance", pooling="lse_lba")
    metadata = {"class_names": ["present"], "receptive_field": RECEPTIVE_FIELD, "stride": STRIDE}
    return predict.ExportedModel(StreamingModel.from_keras(model), metadata)


@pytest.mark.slow
def test_a_slide_streamed_in_tiles_equals_whole_image_inference(tmp_path, exported_model):
    pixels = tissue_everywhere()
    write_slide(tmp_path / "slide.tif", pixels)
    record = predict_slide(exported_model, tmp_path / "slide.tif", tmp_path / "out", tile_size=128)
    whole = stream_image(
        exported_model.streaming, pixels.astype(np.float32), 1024, RECEPTIVE_FIELD, STRIDE
    )
    assert record["tissue_tiles"] == record["tiles"] == 5 * 5
    assert record["probability"]["present"] == pytest.approx(float(whole["probability"][0]), 1e-5)
    with tiffslide.TiffSlide(tmp_path / "out" / "slide_heatmap.tif") as heatmap:
        level0 = np.asarray(heatmap.read_region((0, 0), 0, heatmap.dimensions, as_array=True))
    expected = np.round(whole["saliency_unit"][..., 0] * 255)
    assert level0.shape[:2] == expected.shape
    assert np.abs(level0.reshape(expected.shape).astype(float) - expected).max() <= 1
    written = json.loads((tmp_path / "out" / "slide.json").read_text())
    assert written == json.loads(json.dumps(record))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "slide.json", "slide_heatmap.tif", "slide_thumbnail.png",
    ]  # fmt: skip


def test_glass_is_skipped_and_its_heatmap_is_zero(tmp_path, exported_model):
    write_slide(tmp_path / "half.tif", half_glass())
    record = predict_slide(exported_model, tmp_path / "half.tif", tmp_path / "out", tile_size=128)
    assert 0 < record["tissue_tiles"] < record["tiles"]
    heatmap = tifffile.imread(tmp_path / "out" / "half_heatmap.tif", level=0)
    assert heatmap[:, -8:].max() == 0 and heatmap[:, :8].max() > 0
    for region in record["top_regions"]["regions"]:  # on tissue, in level-0 pixels
        assert 0 <= region["x0"] < 520 // 2 and region["x1"] - region["x0"] == RECEPTIVE_FIELD


def test_levels_and_resolutions(tmp_path):
    write_slide(tmp_path / "s.tif", tissue_everywhere(), levels=3)
    with Slide(tmp_path / "s.tif", level=1) as slide:
        assert slide.shape == (300, 260) and slide.mpp == pytest.approx(2 * MPP)
        np.testing.assert_array_equal(
            slide.read(10, 20, 30, 40), tissue_everywhere()[::2, ::2][10:40, 20:60]
        )
    with Slide(tmp_path / "s.tif", mpp=1.0) as slide:  # level 2 exactly
        assert slide.resolution.level == 2 and slide.shape == (150, 130)
    with Slide(tmp_path / "s.tif", mpp=0.75) as slide:  # level 1, scaled by 1.5
        assert slide.resolution.level == 1 and slide.shape == (200, 173)
        assert slide.read(0, 0, 64, 64).shape == (64, 64, 3)
    with pytest.raises(SlideError, match=r"s.tif: --level=3, but the slide has levels 0 to 2"):
        Slide(tmp_path / "s.tif", level=3)
    with pytest.raises(SlideError, match=r"--mpp=0.1 is finer than the scan"):
        Slide(tmp_path / "s.tif", mpp=0.1)


def test_the_thumbnail_is_read_in_bands_of_the_coarsest_level_that_fits(tmp_path, monkeypatch):
    rows, columns = np.mgrid[0:600, 0:520]  # smooth: a band's rounding moves little
    pixels = np.stack([rows // 5, columns // 5, (rows + columns) // 10], -1).astype(np.uint8)
    write_slide(tmp_path / "s.tif", pixels, levels=3)  # 600x520, 300x260, 150x130
    monkeypatch.setattr(reader, "THUMBNAIL_BAND", 64)
    requests = []
    with Slide(tmp_path / "s.tif") as slide:
        read_region = slide._slide.read_region

        def spy(location, level, size, **kwargs):
            requests.append((level, size))
            return read_region(location, level, size, **kwargs)

        monkeypatch.setattr(slide._slide, "read_region", spy)
        thumbnail = slide.thumbnail(side=200)  # 200x173: level 1 is the coarsest that has it

    assert thumbnail.shape == (200, 173, 3) and thumbnail.dtype == np.uint8
    assert {level for level, _ in requests} == {1}
    assert max(rows for _, (_, rows) in requests) == 64
    whole = np.asarray(Image.fromarray(pixels[::2, ::2]).resize((173, 200), Image.BOX))
    assert np.abs(thumbnail.astype(int) - whole).max() <= 2  # the bands' seams only


def test_what_counts_as_a_slide(tmp_path):
    write_slide(tmp_path / "tiled.tif", tissue_everywhere(200, 200), levels=1)
    tifffile.imwrite(tmp_path / "plain.tif", tissue_everywhere(200, 200))
    (tmp_path / "a.svs").write_bytes(b"")
    assert is_slide(tmp_path / "tiled.tif") and is_slide(tmp_path / "a.svs")
    assert not is_slide(tmp_path / "plain.tif") and not is_slide(tmp_path / "x.png")


def test_tissue_mask_separates_glass_from_tissue():
    mask = tissue_mask(half_glass(100, 100))
    assert mask[:, :50].mean() > 0.95 and mask[:, 50:].mean() == 0


def test_top_regions_across_bands_keep_apart():
    regions = TopRegions(k=3, min_distance=2)
    plane = np.zeros((8, 8), np.float64)
    plane[7, 3], plane[0, 6] = 0.9, 0.5  # the first at a band's last row
    regions.add(0, plane)
    nearby = np.zeros((8, 8), np.float64)
    nearby[0, 3], nearby[5, 5] = 0.8, 0.7  # one row below the first: suppressed
    regions.add(8, nearby)
    assert regions.best() == [(0.9, 7, 3), (0.7, 13, 5), (0.5, 0, 6)]


def test_a_pyramid_halves_down_to_one_tile(tmp_path):
    level0 = heatmap_lib.RawGrid(tmp_path / "l0.raw", (600, 300, 1), np.uint8)
    level0.write(0, 0, np.full((600, 300, 1), 200, np.uint8))
    levels = heatmap_lib.pyramid(level0, tmp_path)
    assert [grid.shape for grid in levels] == [(600, 300, 1), (300, 150, 1), (150, 75, 1)]
    assert levels[-1].read_rows(0, 150).min() == 200


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["add", "served"])
def test_a_crash_leaves_no_output(tmp_path, exported_model, monkeypatch, stage):
    """Ctrl-C while tiles stream in (add) or while the heatmap is finished (served)."""
    from needles_tf.localization.streaming import PooledStream

    write_slide(tmp_path / "slide.tif", tissue_everywhere())
    original, calls = getattr(PooledStream, stage), []

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(PooledStream, stage, interrupted)
    monkeypatch.setattr(heatmap_lib, "TIFF_TILE", 32)  # several bands
    with pytest.raises(KeyboardInterrupt):
        predict_slide(exported_model, tmp_path / "slide.tif", tmp_path / "out", tile_size=128)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_slide_without_tissue_is_named(tmp_path, exported_model):
    write_slide(tmp_path / "glass.tif", np.full((300, 300, 3), 245, np.uint8))
    with pytest.raises(SlideError, match=r"glass.tif: no tissue found"):
        predict_slide(exported_model, tmp_path / "glass.tif", tile_size=128)


@pytest.mark.slow
def test_predict_splits_a_cohort_of_slides_and_images_into_shards(tmp_path, exported_run):
    """The command line: a directory with a slide and an image, two shards, one CSV."""
    _, keras_file = exported_run
    cohort_dir = tmp_path / "cohort"
    cohort_dir.mkdir()
    write_slide(cohort_dir / "slide.tif", half_glass())
    Image.fromarray(tissue_everywhere(96, 80)[..., 0]).save(cohort_dir / "image.png")
    for shard in ("0/2", "1/2"):
        result = subprocess.run(
            [sys.executable, "-m", "needles_tf.predict", f"--model={keras_file}",
             f"--out_dir={tmp_path / 'out'}", "--tile_size=128", f"--shard={shard}",
             "--level=0", "--top_k=2", str(cohort_dir)],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
    with (tmp_path / "out" / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [pathlib.Path(row["image"]).name for row in rows] == ["image.png", "slide.tif"]
    slide = json.loads((tmp_path / "out" / "slide.json").read_text())
    assert len(slide["top_regions"]["regions"]) == 2
    assert (tmp_path / "out" / "image_saliency.png").exists()


REPLICATED = """
import json, sys
from needles_tf.training import distribute
distribute.split_logical_cpus(2)
from needles_tf import predict
from needles_tf.slides.inference import predict_slide
found = {}
for artefact in sys.argv[2:]:
    for strategy in (None, "mirrored"):
        model = predict.load_exported(artefact, strategy)
        record = predict_slide(model, sys.argv[1], tile_size=128, batch_size=3, top_k=3)
        found[f"{artefact} {strategy}"] = [record["probability"], record["top_regions"]]
print(json.dumps(found))
"""


@pytest.mark.slow
def test_tiles_split_across_replicas_give_the_single_device_answer(tmp_path, exported_run):
    """MirroredStrategy over two logical CPUs (GPUs on a real machine), both artefacts."""
    saved_model, keras_file = exported_run
    write_slide(tmp_path / "slide.tif", half_glass())
    result = subprocess.run(
        [sys.executable, "-c", REPLICATED, str(tmp_path / "slide.tif"), str(saved_model),
         str(keras_file)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    for artefact in (saved_model, keras_file):
        alone, replicated = found[f"{artefact} None"], found[f"{artefact} mirrored"]
        assert replicated[0]["present"] == pytest.approx(alone[0]["present"], abs=1e-6)
        for mine, theirs in zip(replicated[1]["regions"], alone[1]["regions"], strict=True):
            # oneDNN's kernels differ with the batch size and attention's exp amplifies it
            # (1.04e-4 seen on an Intel Xeon with AMX)
            assert mine == {**theirs, "score": pytest.approx(theirs["score"], abs=3e-4)}
