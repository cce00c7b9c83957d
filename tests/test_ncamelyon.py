"""nCAMELYON on a miniature CAMELYON17: crop properties, splits, Beam = plain, bad input."""

from __future__ import annotations

import pathlib
import re
import shutil

import apache_beam as beam
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw
from scipy import ndimage
from skimage import measure

from tfds_builders.dummy_data import load_script
from tfds_builders.ncamelyon import (
    annotations,
    layout,
    lesions,
    ncamelyon_dataset_builder,
    planning,
)
from tfds_builders.ncamelyon import slides as slides_lib

SCRIPT = (
    pathlib.Path(ncamelyon_dataset_builder.__file__).parent
    / "dummy_data"
    / "make_dummy_camelyon.py"
)
ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "crop128_o2i_1_10"
SIZE, LOW, HIGH = 128, 0.01, 0.10


def make_miniature(root: pathlib.Path) -> pathlib.Path:
    return load_script(SCRIPT).make_miniature(root)


def build(manual_dir, data_dir, config=CONFIG, beam_options=None, **kwargs):
    builder = ncamelyon_dataset_builder.Builder(config=config, data_dir=data_dir, **kwargs)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual_dir), beam_options=beam_options
        )
    )
    return builder


def records(builder) -> dict[tuple, dict]:
    """Every example of every split, keyed by (slide, level-0 x, y, label)."""
    found = {}
    for split in builder.info.splits:
        for example in builder.as_dataset(split=split).as_numpy_iterator():
            key = (example["slide"].decode(), *example["coordinates"].tolist(), example["label"])
            found[key] = {**example, "split": split}
    return found


@pytest.fixture(scope="module")
def miniature(tmp_path_factory) -> pathlib.Path:
    return make_miniature(tmp_path_factory.mktemp("camelyon17"))


@pytest.fixture(scope="module")
def built(miniature, tmp_path_factory):
    return records(build(miniature, tmp_path_factory.mktemp("tfds")))


def level3_polygons(miniature: pathlib.Path, slide: str) -> annotations.Annotations:
    return annotations.read_asap_xml(miniature / "lesion_annotations" / f"{slide}.xml")


def test_positive_crops_hold_a_whole_lesion_with_o2i_in_range(built, miniature):
    positives = [e for e in built.values() if e["label"] == 1]
    assert positives
    for example in positives:
        mask = example["lesion_mask"][..., 0].astype(bool)
        assert LOW <= example["o2i"] < HIGH
        assert example["o2i"] == pytest.approx(mask.mean())
        # Look one pixel beyond the crop: some lesion must lie wholly inside it.
        x, y = example["coordinates"] // 8
        found = level3_polygons(miniature, example["slide"].decode())
        entry = next(
            s for s in layout.list_slides(miniature) if s.name == example["slide"].decode()
        )
        with slides_lib.open_slide(entry.path) as slide:
            level = slides_lib.level_of(slide, 3, entry.path)
        around = lesions.LesionMask(found, level.downsample, level.shape).window(
            y - 1, x - 1, SIZE + 2, SIZE + 2
        )
        labels = measure.label(around, connectivity=2)
        inner = [r for r in measure.regionprops(labels) if _strictly_inside(r.bbox, SIZE + 2)]
        assert inner, example["slide"]
        rows, columns = np.nonzero(mask)
        box = np.array([rows.min(), columns.min(), rows.max() + 1, columns.max() + 1]) / SIZE
        np.testing.assert_allclose(example["needle_bbox"], box, atol=1e-6)


def _strictly_inside(bbox, side: int) -> bool:
    top, left, bottom, right = bbox
    return top >= 1 and left >= 1 and bottom <= side - 1 and right <= side - 1


def test_lesion_mask_matches_an_independent_rasterization(built, miniature):
    """PIL's polygon fill of the XML (lesions minus exclusions) against the stored masks."""
    for example in (e for e in built.values() if e["label"] == 1):
        found = level3_polygons(miniature, example["slide"].decode())
        x, y = example["coordinates"] // 8
        canvas = Image.new("1", (SIZE, SIZE), 0)
        draw = ImageDraw.Draw(canvas)
        for polygons, value in ((found.lesions, 1), (found.exclusions, 0)):
            for polygon in polygons:
                draw.polygon(
                    [(px / 8 - x - 0.5, py / 8 - y - 0.5) for px, py in polygon], fill=value
                )
        expected = np.asarray(canvas, bool)
        mask = example["lesion_mask"][..., 0].astype(bool)
        # The two rasterizers may differ within two pixels of an outline (PIL fills its
        # outline, up to two pixels deep on slanted edges), nowhere else.
        outline = ndimage.binary_dilation(expected, iterations=2) & ~ndimage.binary_erosion(
            expected, iterations=2
        )
        assert not np.any((mask ^ expected) & ~outline)
        assert mask.sum() > 0.7 * expected.sum()


def test_negatives_are_tissue_from_negative_slides(built, miniature):
    stages = layout.read_stage_labels(miniature / "stage_labels.csv")
    negatives = [e for e in built.values() if e["label"] == 0]
    assert len(negatives) == len(built) / 2
    for example in negatives:
        assert example["image"][..., 1].mean() < 200
        assert not example["lesion_mask"].any() and example["o2i"] == 0
        assert stages[example["slide"].decode()] == "negative"


def test_splits_by_center_and_balanced(built):
    centers = {"train": {0, 1, 2}, "validation": {3}, "test": {4}}
    slides_of = {split: set() for split in centers}
    for example in built.values():
        assert example["center"] in centers[example["split"]]
        assert example["slide"].decode().startswith(f"patient_{20 * example['center']:03d}"[:10])
        slides_of[example["split"]].add(example["slide"])
    assert not (
        slides_of["train"] & slides_of["validation"] or slides_of["train"] & slides_of["test"]
    )
    for split in centers:
        labels = [e["label"] for e in built.values() if e["split"] == split]
        assert sum(labels) * 2 == len(labels) > 0


@pytest.mark.slow
def test_beam_pipeline_gives_the_same_records(built, miniature, tmp_path):
    options = beam.options.pipeline_options.PipelineOptions(["--direct_num_workers=1"])
    through_beam = records(build(miniature, tmp_path, beam_options=options))
    assert through_beam.keys() == built.keys()
    for key, example in built.items():
        for name in ("image", "lesion_mask", "o2i", "needle_bbox", "level"):
            np.testing.assert_array_equal(through_beam[key][name], example[name])


def test_plan_is_reproducible(miniature):
    arguments = (layout.list_slides(miniature), 256, (0.01, 0.1), 3, 50, 2019, False)

    def crops(tasks):
        return {
            split: [(t.name, t.positives, t.negatives) for t in ts] for split, ts in tasks.items()
        }

    first = crops(planning.plan(*arguments)[0])
    assert crops(planning.plan(*arguments)[0]) == first
    assert crops(planning.plan(*arguments[:5], 7, False)[0]) != first


def test_empty_splits_are_left_out_and_said(miniature, tmp_path, capsys):
    # Center 3 has no lesion covering half of a 128 crop (as in Pawlowski et al. 2019).
    builder = build(miniature, tmp_path, config="crop128_o2i_50_100")
    assert set(builder.info.splits) == {"train", "test"}
    assert "the validation split is empty" in capsys.readouterr().out
    # The largest lesion covers ~14% of a 256 crop: no split has a crop in 50-100%.
    with pytest.raises(ValueError, match="every split would be empty"):
        build(miniature, tmp_path, config="crop256_o2i_50_100")


def broken_copy(miniature: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    copy = tmp_path / "camelyon17"
    shutil.copytree(miniature, copy)
    return copy


def plan(root: pathlib.Path, skip_bad_slides: bool = False):
    return planning.plan(layout.list_slides(root), SIZE, (LOW, HIGH), 3, 50, 2019, skip_bad_slides)


def test_an_unreadable_slide_is_named_or_skipped_and_counted(miniature, tmp_path):
    root = broken_copy(miniature, tmp_path)
    bad = root / "center_2" / "patient_040_node_1.tif"
    bad.write_bytes(b"II*\x00 this is not a slide")
    with pytest.raises(slides_lib.SlideError, match=re.escape(f"{bad}: not a readable")):
        plan(root)
    tasks, summary = plan(root, skip_bad_slides=True)
    assert summary.skipped["unreadable (--skip_bad_slides)"] == ["patient_040_node_1"]
    assert "skipped 1 slide(s), unreadable" in "\n".join(summary.lines())
    assert all(task.name != "patient_040_node_1" for task in tasks["train"])


@pytest.mark.parametrize(
    "content, message",
    [
        ("<Annotations></Annotations>", "expected an ASAP annotation file"),
        ("<ASAP_Annotations><Annotations>", "not well-formed XML"),
        (
            '<ASAP_Annotations><Annotations><Annotation Name="a" PartOfGroup="metastases">'
            '<Coordinates><Coordinate Order="0" X="1" Y="1"/><Coordinate Order="1" X="99999" '
            'Y="1"/><Coordinate Order="2" X="1" Y="9"/></Coordinates></Annotation>'
            "</Annotations></ASAP_Annotations>",
            "outside the 3072x2560 slide",
        ),
    ],
)
def test_bad_annotations_name_the_file(miniature, tmp_path, content, message):
    root = broken_copy(miniature, tmp_path)
    xml = root / "lesion_annotations" / "patient_060_node_1.xml"
    xml.write_text(content)
    with pytest.raises(annotations.AnnotationError, match=re.escape(str(xml))) as error:
        plan(root)
    assert message in str(error.value)
    _, summary = plan(root, skip_bad_slides=True)
    assert summary.skipped["unreadable (--skip_bad_slides)"] == ["patient_060_node_1"]


def test_an_annotation_without_a_slide_is_an_error(miniature, tmp_path):
    root = broken_copy(miniature, tmp_path)
    (root / "center_1" / "patient_020_node_1.tif").unlink()
    with pytest.raises(
        layout.LayoutError, match=re.escape("patient_020_node_1.xml: an annotation without")
    ):
        layout.list_slides(root)


def test_a_missing_stage_labels_csv_is_an_error(miniature, tmp_path):
    root = broken_copy(miniature, tmp_path)
    (root / "stage_labels.csv").unlink()
    with pytest.raises(layout.LayoutError, match=re.escape("stage_labels.csv: missing")):
        layout.list_slides(root)
    with pytest.raises(layout.LayoutError, match="no center_0/"):
        layout.find_root(tmp_path / "elsewhere")


@pytest.mark.slow
def test_a_model_trains_on_a_built_config_and_exports(miniature, tmp_path):
    """The ncamelyon config, tiny: builds crop128_o2i_1_10 through the trainer, then trains."""
    from test_train import tiny_config

    from needles_tf import train
    from needles_tf.configs import ncamelyon

    config = ncamelyon.get_config()
    config.model = tiny_config().model
    config.model.update(input_channels=3, receptive_field=9)
    config.update(
        dataset=f"ncamelyon/{CONFIG}",
        epochs=1,
        batch_size=8,
        effective_batch_size=8,
        optimizer="sgd",
        train_size=32,
        overlay_images=2,
    )
    metrics = train.train(
        config,
        tmp_path / "run",
        tfds_data_dir=str(tmp_path / "tfds"),
        tfds_manual_dir=str(miniature),
        verbose=0,
    )
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert (tmp_path / "run" / "saved_model" / "1" / "saved_model.pb").exists()
