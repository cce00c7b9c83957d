"""needles_tf.evaluate: one evaluator per task that the dataset declares, every result
headed by model, dataset, split and images; tables with whole headers; the figures."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import tiny_bagnet_config

from needles_tf import evaluate, packaged
from needles_tf.evaluation import (
    EVALUATORS,
    Evaluator,
    Inputs,
    Settings,
    declared_task,
    evaluator_for,
    result,
    tables,
)
from needles_tf.localization.methods import get_saliency_method
from needles_tf.models.factory import build_model
from tfds_builders.nmnist.nmnist_dataset_builder import NmnistConfig

HEAD = ["model", "dataset", "split", "images"]  # what every result starts with
PACKAGED = "nmnist_canvas64"  # saved_models/: trained on nmnist/canvas_64
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("dataset", "task"),
    [
        ("nmnist/canvas_64", "single_needle"),
        ("nmnist/canvas_256_train_x2", "single_needle"),
        ("nmnist/many_needles_512", "detection"),
        ("nmnist/many_needles_1024", "detection"),
        ("ncamelyon/crop256_o2i_1_10", "single_needle"),
        ("cxr14/size512", "findings"),
    ],
)
def test_each_dataset_declares_its_task(dataset, task, tmp_path):
    builder = tfds.builder(dataset, data_dir=str(tmp_path))  # read, never built
    assert not builder.is_prepared()
    assert declared_task(builder) == task
    assert evaluator_for(builder) is EVALUATORS[task]


def test_a_dataset_without_a_known_task_is_named_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"^--dataset=mnist: declares no task") as error:
        evaluator_for(tfds.builder("mnist", data_dir=str(tmp_path)))
    assert "\n" not in str(error.value)
    monkeypatch.setattr(NmnistConfig, "task", property(lambda self: "counting"))
    expected = r"task='counting': expected one of \['detection', 'findings', 'single_needle'\]"
    with pytest.raises(ValueError, match=expected):
        evaluator_for(tfds.builder("nmnist/canvas_64", data_dir=str(tmp_path)))


def test_the_evaluator_follows_the_declared_task_not_the_features(tfds_dir, tmp_path, monkeypatch):
    """canvas_64's examples given the features of the other tasks (every needle boxed, boxes
    per finding): the declared task still chooses; declaring another task chooses again."""
    called = []
    for task in list(EVALUATORS):

        def fake(inputs, task=task):
            called.append(task)
            return result(inputs, 0, chosen=task)

        monkeypatch.setitem(EVALUATORS, task, Evaluator(fake, lambda found: found["chosen"]))

    def with_every_feature(*args, **kwargs):
        return load(*args, **kwargs).map(
            lambda e: {
                **e,
                "needles": {"bbox": tf.zeros([3, 4])},
                "bboxes": {"bbox": tf.zeros([1, 4]), "label": tf.zeros([1], tf.int64)},
            }
        )

    load = evaluate.load
    monkeypatch.setattr(evaluate, "load", with_every_feature)
    run = functools.partial(
        evaluate.evaluate, model=PACKAGED, out_dir=tmp_path, resamples=0, data_dir=tfds_dir
    )
    assert run()["chosen"] == "single_needle"
    monkeypatch.setattr(NmnistConfig, "task", property(lambda self: "detection"))
    assert run()["chosen"] == "detection"
    assert called == ["single_needle", "detection"]
    assert list(json.loads((tmp_path / "metrics.json").read_text()))[:4] == HEAD


def test_a_packaged_model_on_single_needles(tfds_dir, tmp_path, capsys):
    """No bootstrap (the narrow table that cut `localization_ap` to `localiza`)."""
    results = evaluate.evaluate(
        model=PACKAGED,
        methods=["cam", "gradient"],
        out_dir=tmp_path,
        batch_size=8,
        resamples=0,
        data_dir=tfds_dir,
    )
    shipped = json.loads((packaged.packaged_folder(PACKAGED) / "metrics.json").read_text())
    assert list(results)[:4] == HEAD and results["model"] == shipped["model"]
    assert results["dataset"] == "nmnist/canvas_64" and results["split"] == "test"
    assert results["images"] == results["examples"] == 16  # the dummy test split
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert list(saved)[:4] == HEAD and saved["images"] == 16
    assert set(saved["localization"]) == {"cam", "gradient"}
    assert "ci95" not in saved["classification"]
    for picture in ("precision_recall.png", "overlays.png", "reliability.png"):
        assert (tmp_path / picture).read_bytes()[:8] == PNG
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("saliency"))
    columns = ["localization_ap", "dice", "pointing_game", "iobb_accuracy@tau=0.5", "pxap"]
    assert header.split() == ["saliency", *columns]


def tiny_inputs(data, out, classes=1, class_names=("present",)) -> Inputs:
    """An untrained tiny BagNet (instance head) on in-memory examples."""
    model = build_model(tiny_bagnet_config(head="instance", num_classes=classes))
    return Inputs(
        model=model,
        model_name="tiny",
        dataset="in/memory",
        split="test",
        data=data,
        classes=classes,
        class_names=class_names,
        methods={"instance": get_saliency_method("instance")},
        out=out,
        settings=Settings(batch_size=2, resamples=0, peak_distance=8.0),
    )


def test_the_detection_result_has_the_common_head(tmp_path):
    rng = np.random.default_rng(0)
    boxes = [
        [[0.1, 0.1, 0.4, 0.4]],
        [[0.5, 0.5, 0.8, 0.8], [0.1, 0.6, 0.3, 0.9]],
        [[0.6, 0.1, 0.9, 0.3]],
    ]
    examples = [
        {"image": rng.integers(0, 256, (96, 96, 1), np.uint8), "needles": {"bbox": np.float32(b)}}
        for b in boxes
    ]
    data = tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature={
            "image": tf.TensorSpec((96, 96, 1), tf.uint8),
            "needles": {"bbox": tf.TensorSpec((None, 4), tf.float32)},
        },
    )
    found = EVALUATORS["detection"].evaluate(tiny_inputs(data, tmp_path))
    assert list(found)[:4] == HEAD and found["images"] == 3
    assert found["model"] == "tiny" and found["dataset"] == "in/memory"
    assert found["detection"]["needles"] == 4
    for picture in ("detection_precision_recall.png", "detections.png"):
        assert (tmp_path / picture).read_bytes()[:8] == PNG
    assert "3 images, 4 needles" in EVALUATORS["detection"].table(found)


def test_the_findings_result_has_the_common_head(tmp_path):
    names = ("Atelectasis", "Effusion", "Mass")
    rng = np.random.default_rng(0)
    labels = [[0], [1, 2], [], [0, 2]]
    boxed = [[0], [2], [], []]  # the finding of each box
    examples = [
        {
            "image": rng.integers(0, 256, (64, 64, 1), np.uint8),
            "label": np.int64(label).reshape(-1),
            "bboxes": {
                "bbox": np.float32([[0.2, 0.2, 0.6, 0.5]] * len(box)).reshape(-1, 4),
                "label": np.int64(box).reshape(-1),
            },
        }
        for label, box in zip(labels, boxed, strict=True)
    ]
    data = tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature={
            "image": tf.TensorSpec((64, 64, 1), tf.uint8),
            "label": tf.TensorSpec((None,), tf.int64),
            "bboxes": {
                "bbox": tf.TensorSpec((None, 4), tf.float32),
                "label": tf.TensorSpec((None,), tf.int64),
            },
        },
    )
    found = EVALUATORS["findings"].evaluate(tiny_inputs(data, tmp_path, 3, names))
    assert list(found)[:4] == HEAD and found["images"] == 4
    assert found["model"] == "tiny" and found["dataset"] == "in/memory"
    assert set(found["localization"]["instance"]) == {"Atelectasis", "Mass"}
    assert set(found["classification"]["auc"]) == {*names, "mean"}
    table = EVALUATORS["findings"].table(found)
    header = next(line for line in table.splitlines() if "finding" in line)
    assert header.split() == [
        "finding",
        "AUC",
        "images",
        "with",
        "boxes",
        "DICE",
        "iobb_accuracy@tau=0.5",
    ]


def test_tables_print_every_header_whole():
    values = {"localization_ap": 0.5, "dice": 0.25, "iobb_accuracy@tau=0.5": 1.0, "pxap": 0.75}
    found = {
        "model": "m",
        "dataset": "nmnist/canvas_64",
        "split": "test",
        "images": 2,
        "classification": {
            "accuracy": 1.0,
            "auc": {"mean": 1.0},
            "expected_calibration_error": 0.0,
        },
        "localization": {"a_long_saliency_method_name": values, "cam": {**values, "pxap": "n/a"}},
    }
    lines = tables.single_needle(found).splitlines()
    assert lines[0].startswith("nmnist/canvas_64 test: 2 images; accuracy 1.0000")
    assert lines[1].split() == ["saliency", *values]
    assert lines[2].split() == [
        "a_long_saliency_method_name",
        "0.5000",
        "0.2500",
        "1.0000",
        "0.7500",
    ]
    assert lines[3].split()[-1] == "skipped"
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns


# Moved from test_train.py: the reference run (conftest.uninterrupted) evaluated.


@pytest.mark.slow
def test_evaluate_writes_metrics_table_and_pictures(uninterrupted, tfds_dir, capsys):
    model_dir, run_metrics = uninterrupted
    methods = ["instance", "gradient", "sparse_inversion"]
    results = evaluate.evaluate(model_dir, "test", methods, batch_size=8, data_dir=tfds_dir)
    assert list(results)[:4] == HEAD and results["model"] == str(model_dir)
    # The same weights on the same split: the trainer's test accuracy (logit >= 0).
    assert results["classification"]["accuracy"] == pytest.approx(run_metrics["test"]["accuracy"])
    assert results["examples"] == results["images"] == 16
    assert set(results["localization"]) == set(methods)
    for values in results["localization"].values():
        for name in ("localization_ap", "dice", "pointing_game", "pxap", "iobb_accuracy@tau=0.5"):
            assert 0.0 <= values[name] <= 1.0, name
    saved = json.loads((model_dir / "eval" / "metrics.json").read_text())
    assert saved["localization"].keys() == results["localization"].keys()
    for picture in ("precision_recall.png", "overlays.png"):
        assert (model_dir / "eval" / picture).read_bytes()[:8] == PNG
    table = capsys.readouterr().out
    assert "sparse_inversion" in table and "localization_ap" in table


@pytest.mark.slow
def test_evaluate_without_boxes_says_why_it_skips(uninterrupted, tfds_dir, monkeypatch, capsys):
    def without_boxes(*args, **kwargs):
        data = load(*args, **kwargs)
        return data.map(lambda e: {"image": e["image"], "label": e["label"]})

    load = evaluate.load
    monkeypatch.setattr(evaluate, "load", without_boxes)
    model_dir, _ = uninterrupted
    results = evaluate.evaluate(model_dir, "test", ["gradient"], batch_size=8, data_dir=tfds_dir)
    assert results["localization"] == "skipped: nmnist/canvas_64 has no needle_bbox feature"
    assert "localization skipped: nmnist/canvas_64 has no needle_bbox" in capsys.readouterr().out
    assert (model_dir / "eval" / "overlays.png").exists()


def test_evaluate_names_a_bad_model_dir_or_split(tfds_dir, tmp_path):
    with pytest.raises(ValueError, match=r"--split='tset': expected one of \['test', 'train'"):
        evaluate.evaluate(model=PACKAGED, split="tset", out_dir=tmp_path, data_dir=tfds_dir)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match=r"--model_dir=.*a_file: is a file"):
        evaluate.evaluate(tmp_path / "a_file", "test", data_dir=tfds_dir)
    with pytest.raises(ValueError, match=r"--model_dir .* or --model .*, one of the two"):
        evaluate.evaluate(tmp_path, model=PACKAGED, data_dir=tfds_dir)
