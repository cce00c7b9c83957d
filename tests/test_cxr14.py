"""ChestX-ray14 builder on a tiny synthetic set; multi-label labels; multires training + export."""

from __future__ import annotations

import pathlib
import re
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from skimage import transform

from needles_tf.data import pipeline
from tfds_builders.cxr14 import cxr14_dataset_builder, records
from tfds_builders.dummy_data import load_script

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = pathlib.Path(cxr14_dataset_builder.__file__).parent / "dummy_data" / "make_dummy_cxr14.py"


def make_miniature(root: pathlib.Path) -> pathlib.Path:
    return load_script(SCRIPT).make_miniature(root, side=256)


@pytest.fixture(scope="module")
def miniature(tmp_path_factory) -> pathlib.Path:
    return make_miniature(tmp_path_factory.mktemp("cxr14"))


@pytest.fixture(scope="module")
def built(miniature, tmp_path_factory):
    builder = cxr14_dataset_builder.Builder(
        config="size512", data_dir=tmp_path_factory.mktemp("tfds")
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(miniature))
    )
    return builder


def examples(builder, split):
    return list(builder.as_dataset(split=split).as_numpy_iterator())


def test_splits_are_patient_wise_and_validation_is_a_quarter(built, miniature):
    patients = {s: {int(e["patient_id"]) for e in examples(built, s)} for s in built.info.splits}
    assert not (patients["train"] & patients["validation"])
    assert not (patients["train"] | patients["validation"]) & patients["test"]
    assert len(patients["validation"]) == round(0.25 * 8)
    listed = set((miniature / "test_list.txt").read_text().split())
    assert {e["image_id"].decode() for e in examples(built, "test")} == listed


def test_labels_boxes_and_resizing_follow_the_files(built, miniature):
    rows = {
        line.split(",")[0]: line.split(",")[1]
        for line in (miniature / "Data_Entry_2017.csv").read_text().splitlines()[1:]
    }
    names = built.info.features["label"].feature.names
    for split in built.info.splits:
        for example in examples(built, split):
            name = example["image_id"].decode()
            expected = [] if rows[name] == "No Finding" else rows[name].split("|")
            assert [names[i] for i in example["label"]] == expected
            if split != "test":
                assert len(example["bboxes"]["label"]) == 0
    boxed = [e for e in examples(built, "test") if len(e["bboxes"]["label"])]
    assert boxed and all(b.min() >= 0 and b.max() <= 1 for e in boxed for b in e["bboxes"]["bbox"])
    first = examples(built, "test")[0]
    original = np.asarray(Image.open(miniature / "images" / first["image_id"].decode()))
    resized = transform.resize(original, (512, 512), preserve_range=True, anti_aliasing=True)
    np.testing.assert_array_equal(first["image"][..., 0], np.round(resized).astype(np.uint8))


def test_multi_hot_labels_for_training(built):
    assert pipeline.class_count(built) == 14
    assert pipeline.class_names(built)[:2] == ("Atelectasis", "Cardiomegaly")
    data = pipeline.load("cxr14/size512", "train", data_dir=str(built.data_dir_root))
    for example in data.take(4):
        _, label = pipeline.to_example(example, 14)
        expected = np.zeros(14, np.float32)
        expected[example["label"].numpy()] = 1.0
        np.testing.assert_array_equal(label.numpy(), expected)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda root: (root / "test_list.txt").unlink(), "test_list.txt: missing"),
        (
            lambda root: (root / "images" / "00000003_001.png").unlink(),
            "Data_Entry_2017.csv:7: 00000003_001.png is not in",
        ),
        (
            lambda root: (root / "BBox_List_2017.csv").write_text(
                "h\nnot_an_image.png,Mass,1,2,3,4\n"
            ),
            "BBox_List_2017.csv:2: not_an_image.png is not in Data_Entry_2017.csv",
        ),
    ],
)
def test_bad_files_are_named(miniature, tmp_path, damage, message):
    root = tmp_path / "cxr14"
    shutil.copytree(miniature, root)
    damage(root)
    with pytest.raises(records.Cxr14Error, match=re.escape(message)):
        records.read_index(root, cxr14_dataset_builder.FINDINGS)


@pytest.fixture(scope="module")
def multires_run(built, tmp_path_factory):
    """The multires config, narrowed: one epoch, best checkpoint by mean validation AUC."""
    from needles_tf import train
    from needles_tf.configs import multires

    config = multires.get_config()
    config.model.update(width=0.125, growth_rate=4, levels=2, dtype_policy="float32")
    config.update(epochs=1, batch_size=4, effective_batch_size=4, overlay_images=2)
    model_dir = tmp_path_factory.mktemp("run")
    metrics = train.train(config, model_dir, tfds_data_dir=str(built.data_dir_root), verbose=0)
    return model_dir, metrics


@pytest.mark.slow
def test_multires_config_trains_on_it_and_exports(multires_run):
    from needles_tf.metadata import read_metadata

    model_dir, metrics = multires_run
    assert set(metrics["test"]) == {"accuracy", "auc", "loss"}
    assert 0.0 <= metrics["validation"]["auc"] <= 1.0
    exported = model_dir / "saved_model" / "1"
    assert (exported / "saved_model.pb").exists()
    assert read_metadata(exported)["class_names"][-1] == "Hernia"


@pytest.mark.slow
def test_evaluate_reports_auc_dice_and_iobb_per_finding(multires_run, built, miniature, capsys):
    from needles_tf import evaluate

    model_dir, _ = multires_run
    results = evaluate.evaluate(
        model_dir,
        "test",
        ["instance"],
        batch_size=4,
        taus=(0.1, 0.5),
        data_dir=str(built.data_dir_root),
    )
    boxed = {
        line.split(",")[1].replace("Infiltrate", "Infiltration")
        for line in (miniature / "BBox_List_2017.csv").read_text().splitlines()[1:]
    }
    per_finding = results["localization"]["instance"]
    assert set(per_finding) == boxed
    for values in per_finding.values():
        assert values["images"] >= 1 and 0.0 <= values["dice"] <= 1.0
        assert 0.0 <= values["iobb_accuracy@tau=0.1"] <= 1.0
    assert "Atelectasis" in results["classification"]["auc"]
    assert "mean AUC" in capsys.readouterr().out
    assert (model_dir / "eval" / "metrics.json").exists()
